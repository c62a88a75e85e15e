"""DataGate: dataset-level checks between ExampleGen and Transform.

ExampleValidator reports anomalies against the schema but never stops a run;
the gate does, with one error that lists every problem at once (the rules:
README.md, "Your own images"; why a component: docs/design.md). Its inputs are the examples (their `label_conflicts.jsonl`), the statistics
(images per class and split), the schema (the class list) and the validator's
anomalies (so the validator's findings are recorded before the gate decides).
The DAG makes Transform wait for it (`add_upstream_node`), so nothing is
transformed or trained on data that failed.

Its output is a standard `ExampleAnomalies` artifact, as TFX's other
validators (ExampleValidator, DistributionValidator) write: an empty
`Split-<name>/SchemaDiff.pb` per split (a published gate found no problem) and
`data_gate.json` with the counts it checked. A custom artifact type would need
an importable one-dot `module.Class` name to run on Vertex AI Pipelines.
Custom properties: `passed` (1), `problem_count`, `class_count`, `image_count`.
"""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts

from components.data_gate import executor
from components.data_gate import spec


class DataGate(base_component.BaseComponent):
  """Fails the run, listing every problem, when the data cannot train a classifier."""

  SPEC_CLASS = spec.DataGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, statistics: types.BaseChannel,
               schema: types.BaseChannel, min_images_per_class: int,
               anomalies: types.BaseChannel = None):
    super().__init__(spec=spec.DataGateSpec(**{
        spec.EXAMPLES_KEY: examples, spec.STATISTICS_KEY: statistics,
        spec.SCHEMA_KEY: schema, spec.ANOMALIES_KEY: anomalies,
        spec.MIN_IMAGES_PER_CLASS_KEY: min_images_per_class,
        spec.RESULT_KEY: types.Channel(type=standard_artifacts.ExampleAnomalies)}))
