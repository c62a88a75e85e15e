"""The pipeline's custom TFX components (one package each: component.py +
executor.py) and what the steps share: contracts.py (names), example_splits.py
(reading example splits), artifact_readers.py (reading one step's files),
evaluator/ (the stock Evaluator's configuration and its results)."""

# Imported first for its side effect: it selects Keras 2 before TensorFlow loads.
import models  # pylint: disable=unused-import
