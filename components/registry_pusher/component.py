"""RegistryPusher: the TFX Pusher's contract plus what a registry record needs.

Besides the model and its blessing it reads the evaluation (metrics for the
record), the examples (data fingerprint; train images to calibrate the int8
TFLite model on, eval images to score the TFLite models) and the transform
graph (the label map).
"""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components.registry_pusher import executor


class RegistryPusherSpec(types.ComponentSpec):
  PARAMETERS = {
      'registry_dir': ExecutionParameter(type=str),
      'model_name': ExecutionParameter(type=str),
      # export.*: the most accuracy a quantized TFLite model may lose against
      # the SavedModel and still be published; int8 calibration images.
      'max_quantized_drop': ExecutionParameter(type=float),
      'representative_images': ExecutionParameter(type=int),
  }
  INPUTS = {
      'model': ChannelParameter(type=standard_artifacts.Model),
      'model_blessing': ChannelParameter(type=standard_artifacts.ModelBlessing),
      'evaluation': ChannelParameter(type=standard_artifacts.ModelEvaluation),
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'transform_graph': ChannelParameter(type=standard_artifacts.TransformGraph),
  }
  OUTPUTS = {
      'pushed_model': ChannelParameter(type=standard_artifacts.PushedModel),
  }


class RegistryPusher(base_component.BaseComponent):
  """Publishes a blessed model as the next version of `model_name`."""

  SPEC_CLASS = RegistryPusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
               evaluation: types.BaseChannel, examples: types.BaseChannel,
               transform_graph: types.BaseChannel, registry_dir: str,
               model_name: str, max_quantized_drop: float,
               representative_images: int):
    super().__init__(spec=RegistryPusherSpec(
        model=model, model_blessing=model_blessing, evaluation=evaluation,
        examples=examples, transform_graph=transform_graph,
        registry_dir=registry_dir, model_name=model_name,
        max_quantized_drop=max_quantized_drop,
        representative_images=representative_images,
        pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
