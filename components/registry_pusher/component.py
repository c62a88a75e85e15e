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

from components.registry_pusher import executor
from components.registry_pusher import spec


class RegistryPusher(base_component.BaseComponent):
  """Publishes a blessed model as the next version of `model_name`."""

  SPEC_CLASS = spec.RegistryPusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
               evaluation: types.BaseChannel, examples: types.BaseChannel,
               transform_graph: types.BaseChannel, registry_dir: str,
               model_name: str, max_quantized_drop: float,
               representative_images: int, score_images: int):
    super().__init__(spec=spec.RegistryPusherSpec(**{
        spec.MODEL_KEY: model, spec.MODEL_BLESSING_KEY: model_blessing,
        spec.EVALUATION_KEY: evaluation, spec.EXAMPLES_KEY: examples,
        spec.TRANSFORM_GRAPH_KEY: transform_graph, spec.REGISTRY_DIR_KEY: registry_dir,
        spec.MODEL_NAME_KEY: model_name, spec.MAX_QUANTIZED_DROP_KEY: max_quantized_drop,
        spec.REPRESENTATIVE_IMAGES_KEY: representative_images,
        spec.SCORE_IMAGES_KEY: score_images,
        spec.PUSHED_MODEL_KEY: types.Channel(type=standard_artifacts.PushedModel)}))
