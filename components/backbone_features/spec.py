"""BackboneFeatures' spec: its input, output and parameter names, read by the
component, the executor and the tests; inputs under TFX's standard keys."""

from tfx import types
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
TRANSFORM_GRAPH_KEY = standard_component_specs.TRANSFORM_GRAPH_KEY
CUSTOM_CONFIG_KEY = standard_component_specs.CUSTOM_CONFIG_KEY
FEATURES_KEY = 'features'
# JSON lists of split names: those embedded under every labeled view, and
# those embedded as the clean image only.
LABELED_SPLITS_KEY = 'labeled_splits'
CLEAN_SPLITS_KEY = 'clean_splits'


class BackboneFeaturesSpec(types.ComponentSpec):
  PARAMETERS = {
      # The Trainer's custom_config (models/settings.py), as JSON.
      CUSTOM_CONFIG_KEY: ExecutionParameter(type=str),
      LABELED_SPLITS_KEY: ExecutionParameter(type=str),
      CLEAN_SPLITS_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
  }
  OUTPUTS = {
      # Examples, so the Trainer takes it as its `examples`: one record per
      # image with its features instead of its pixels (components/contracts.py).
      FEATURES_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }
