"""LabelQueue: after the Trainer, which unlabeled images to label next.

Scores the ExampleGen `unlabeled` split with the new model's
`embeddings_from_examples` signature and ranks it by uncertainty with a
diversity term (ranking.py). Ahead of those it puts the `check_labels` most
likely wrong labels the Trainer's data-quality audit found (its `model_run`
output), as "check this label". docs/labeling.md says how to feed the labels back.
Its output `queue` is a standard `InferenceResult` artifact (what BulkInferrer
writes for predictions on unlabeled data): a custom artifact type would need
an importable one-dot `module.Class` name to run on Vertex AI Pipelines. It
holds label_queue.csv, contact_sheet.png and label_queue.json (executor.py);
custom properties `queued` and `pool_images`.
"""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts

from components.label_queue import executor
from components.label_queue import spec


class LabelQueue(base_component.BaseComponent):
  """Writes label_queue.csv and contact_sheet.png for the unlabeled split."""

  SPEC_CLASS = spec.LabelQueueSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
               transform_graph: types.BaseChannel, unlabeled_dir: str,
               queue_size: int, candidate_factor: int, uncertainty: str,
               model_run: types.BaseChannel = None, labeled_dir: str = '',
               check_labels: int = 0):
    super().__init__(spec=spec.LabelQueueSpec(**{
        spec.MODEL_KEY: model, spec.EXAMPLES_KEY: examples,
        spec.TRANSFORM_GRAPH_KEY: transform_graph, spec.MODEL_RUN_KEY: model_run,
        spec.UNLABELED_DIR_KEY: unlabeled_dir, spec.LABELED_DIR_KEY: labeled_dir,
        spec.CHECK_LABELS_KEY: check_labels, spec.QUEUE_SIZE_KEY: queue_size,
        spec.CANDIDATE_FACTOR_KEY: candidate_factor, spec.UNCERTAINTY_KEY: uncertainty,
        spec.QUEUE_KEY: types.Channel(type=standard_artifacts.InferenceResult)}))
