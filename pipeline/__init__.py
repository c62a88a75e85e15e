"""The TFX image-classification pipeline: DAG, configuration and command line.

TFT 1.16 and TFMA 0.47 need Keras 2 (tf_keras); the switch must be set before
TensorFlow is first imported anywhere in the process.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
