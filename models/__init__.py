"""The model: the Transform and Trainer module files (`preprocessing.py`,
`trainer/task.py`, referenced by path from pipeline/dag.py) and the in-graph
code every exported signature carries (backbones, image decoding, the
classifier head, the unknown-image score, Grad-CAM, the signatures).
No TFX orchestration here: that is components/ and pipeline/.

TFT 1.16 and TFMA 0.47 need Keras 2 (tf_keras); the switch must be set before
TensorFlow is first imported anywhere in the process.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
