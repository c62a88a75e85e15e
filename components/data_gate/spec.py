"""DataGate's spec: its input, output and parameter names, read by the
component, the executor and the tests; inputs under TFX's standard keys."""

from tfx import types
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
STATISTICS_KEY = standard_component_specs.STATISTICS_KEY
SCHEMA_KEY = standard_component_specs.SCHEMA_KEY
ANOMALIES_KEY = standard_component_specs.ANOMALIES_KEY
RESULT_KEY = 'result'
MIN_IMAGES_PER_CLASS_KEY = 'min_images_per_class'


class DataGateSpec(types.ComponentSpec):
  PARAMETERS = {
      MIN_IMAGES_PER_CLASS_KEY: ExecutionParameter(type=int),
  }
  INPUTS = {
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics),
      SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
      ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies,
                                      optional=True),
  }
  OUTPUTS = {
      RESULT_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
  }
