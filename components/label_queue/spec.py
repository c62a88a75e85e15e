"""LabelQueue's spec: its input, output and parameter names, read by the
component, the executor, the run summary and the tests; inputs under TFX's
standard keys."""

from tfx import types
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

MODEL_KEY = standard_component_specs.MODEL_KEY
EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
TRANSFORM_GRAPH_KEY = standard_component_specs.TRANSFORM_GRAPH_KEY
MODEL_RUN_KEY = standard_component_specs.MODEL_RUN_KEY
QUEUE_KEY = 'queue'
QUEUE_SIZE_KEY = 'queue_size'
CANDIDATE_FACTOR_KEY = 'candidate_factor'
UNCERTAINTY_KEY = 'uncertainty'
UNLABELED_DIR_KEY = 'unlabeled_dir'
LABELED_DIR_KEY = 'labeled_dir'
CHECK_LABELS_KEY = 'check_labels'


class LabelQueueSpec(types.ComponentSpec):
  PARAMETERS = {
      QUEUE_SIZE_KEY: ExecutionParameter(type=int),
      CANDIDATE_FACTOR_KEY: ExecutionParameter(type=int),
      UNCERTAINTY_KEY: ExecutionParameter(type=str),
      UNLABELED_DIR_KEY: ExecutionParameter(type=str),
      LABELED_DIR_KEY: ExecutionParameter(type=str),
      CHECK_LABELS_KEY: ExecutionParameter(type=int),
  }
  INPUTS = {
      MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
      # The Trainer's logs, with data_quality/suspect_labels.csv.
      MODEL_RUN_KEY: ChannelParameter(type=standard_artifacts.ModelRun, optional=True),
  }
  OUTPUTS = {
      QUEUE_KEY: ChannelParameter(type=standard_artifacts.InferenceResult),
  }
