"""RegistryPusher's spec: the TFX Pusher's standard keys (its executor's
blessing check and model path read them) plus the registry's parameters."""

from tfx import types
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

MODEL_KEY = standard_component_specs.MODEL_KEY
MODEL_BLESSING_KEY = standard_component_specs.MODEL_BLESSING_KEY
EVALUATION_KEY = standard_component_specs.EVALUATION_KEY
EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
TRANSFORM_GRAPH_KEY = standard_component_specs.TRANSFORM_GRAPH_KEY
PUSHED_MODEL_KEY = standard_component_specs.PUSHED_MODEL_KEY
REGISTRY_DIR_KEY = 'registry_dir'
MODEL_NAME_KEY = 'model_name'
MAX_QUANTIZED_DROP_KEY = 'max_quantized_drop'
REPRESENTATIVE_IMAGES_KEY = 'representative_images'
SCORE_IMAGES_KEY = 'score_images'


class RegistryPusherSpec(types.ComponentSpec):
  PARAMETERS = {
      REGISTRY_DIR_KEY: ExecutionParameter(type=str),
      MODEL_NAME_KEY: ExecutionParameter(type=str),
      # export.*: the most accuracy a quantized TFLite model may lose against
      # the SavedModel and still be published; int8 calibration images; eval
      # images every model is scored on.
      MAX_QUANTIZED_DROP_KEY: ExecutionParameter(type=float),
      REPRESENTATIVE_IMAGES_KEY: ExecutionParameter(type=int),
      SCORE_IMAGES_KEY: ExecutionParameter(type=int),
  }
  INPUTS = {
      MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
      EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
  }
  OUTPUTS = {
      PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
  }
