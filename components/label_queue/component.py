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
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components.label_queue import executor


class LabelQueueSpec(types.ComponentSpec):
  PARAMETERS = {
      'queue_size': ExecutionParameter(type=int),
      'candidate_factor': ExecutionParameter(type=int),
      'uncertainty': ExecutionParameter(type=str),
      'unlabeled_dir': ExecutionParameter(type=str),
      'labeled_dir': ExecutionParameter(type=str),
      'check_labels': ExecutionParameter(type=int),
  }
  INPUTS = {
      'model': ChannelParameter(type=standard_artifacts.Model),
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'transform_graph': ChannelParameter(type=standard_artifacts.TransformGraph),
      # The Trainer's logs, with data_quality/suspect_labels.csv.
      'model_run': ChannelParameter(type=standard_artifacts.ModelRun, optional=True),
  }
  OUTPUTS = {
      'queue': ChannelParameter(type=standard_artifacts.InferenceResult),
  }


class LabelQueue(base_component.BaseComponent):
  """Writes label_queue.csv and contact_sheet.png for the unlabeled split."""

  SPEC_CLASS = LabelQueueSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
               transform_graph: types.BaseChannel, unlabeled_dir: str,
               queue_size: int, candidate_factor: int, uncertainty: str,
               model_run: types.BaseChannel = None, labeled_dir: str = '',
               check_labels: int = 0):
    super().__init__(spec=LabelQueueSpec(
        model=model, examples=examples, transform_graph=transform_graph,
        model_run=model_run, unlabeled_dir=unlabeled_dir, labeled_dir=labeled_dir,
        check_labels=check_labels, queue_size=queue_size,
        candidate_factor=candidate_factor, uncertainty=uncertainty,
        queue=types.Channel(type=standard_artifacts.InferenceResult)))
