"""LabelQueue: after the Trainer, which unlabeled images to label next.

Scores the ExampleGen `unlabeled` split with the new model's
`embeddings_from_examples` signature and ranks it by uncertainty with a
diversity term (ranking.py); docs/labeling.md says how to feed the labels back.
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
  }
  INPUTS = {
      'model': ChannelParameter(type=standard_artifacts.Model),
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'transform_graph': ChannelParameter(type=standard_artifacts.TransformGraph),
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
               queue_size: int, candidate_factor: int, uncertainty: str):
    super().__init__(spec=LabelQueueSpec(
        model=model, examples=examples, transform_graph=transform_graph,
        unlabeled_dir=unlabeled_dir, queue_size=queue_size,
        candidate_factor=candidate_factor, uncertainty=uncertainty,
        queue=types.Channel(type=standard_artifacts.InferenceResult)))
