"""TFMA configuration for the Evaluator: what is measured and what blesses.

The model is fed raw serialized tf.Examples through its `from_examples`
signature, so the candidate and the baseline each apply their own transform
graph; string labels are mapped to class ids through the `all_classes` output.
"""

from typing import List

import tensorflow_model_analysis as tfma

ACCURACY = 'sparse_categorical_accuracy'
EXAMPLE_COUNT = 'example_count'


def make_eval_config(class_names: List[str], signature_name: str,
                     label_key: str, min_accuracy: float,
                     max_accuracy_drop: float) -> tfma.EvalConfig:
  """Blesses a model whose accuracy is >= `min_accuracy` and, when a blessed
  baseline exists, at most `max_accuracy_drop` (absolute) below the baseline's.
  """
  accuracy_threshold = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(
          lower_bound={'value': min_accuracy}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -max_accuracy_drop}))
  return tfma.EvalConfig(
      # A generic SavedModel called through the signature: left unset, TFMA
      # first tries a full Keras load of the candidate and of the baseline
      # only to learn their type, then loads them again.
      model_specs=[tfma.ModelSpec(
          signature_name=signature_name, label_key=label_key,
          prediction_key='probabilities', model_type=tfma.TF_GENERIC)],
      slicing_specs=[tfma.SlicingSpec()],
      metrics_specs=[
          tfma.MetricsSpec(metrics=[
              tfma.MetricConfig(class_name='ExampleCount'),
              tfma.MetricConfig(class_name='SparseCategoricalAccuracy',
                                threshold=accuracy_threshold),
              tfma.MetricConfig(class_name='MultiClassConfusionMatrixPlot'),
          ]),
          # Per class at the most likely class (top 1), the decision the
          # classifier actually makes; the default (probability >= 0.5) would
          # count nothing for an unsure model and disagree with the matrix.
          tfma.MetricsSpec(
              metrics=[tfma.MetricConfig(class_name='Precision', config='"top_k": 1'),
                       tfma.MetricConfig(class_name='Recall', config='"top_k": 1')],
              binarize=tfma.BinarizationOptions(
                  class_ids={'values': list(range(len(class_names)))})),
      ])
