"""BackboneFeatures: the frozen backbone's pass over the images as a Beam step.

With `training.beam_features`, this step sits between Transform and the
Trainer. It runs the transform graph and the frozen backbone over
ExampleGen's examples with Beam's RunInference, so the pass that dominates a
frozen-backbone run scales out on `beam.runner` (Dataflow, Flink, Spark) with
the other data steps instead of running in the Trainer's one process, and TFX
caches its output like any artifact: a rerun that changes only the head's
settings does not run the backbone again. Its output is a standard `Examples`
artifact with the same splits, one record per image holding its label id,
its features under each view and its names (`contracts.BACKBONE_FEATURES_FEATURE`);
the Trainer takes it as its `examples` and fits the head on it
(models/trainer/task.py). The views are the Trainer's own
(feature_cache.labeled_views) for the `labeled_splits`, the clean image for
the `clean_splits`.
"""

import json
from typing import Any, Dict, Sequence

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts

from components.backbone_features import executor
from components.backbone_features import spec


class BackboneFeatures(base_beam_component.BaseBeamComponent):
  """Writes the backbone's features of every image, for the Trainer."""

  SPEC_CLASS = spec.BackboneFeaturesSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, transform_graph: types.BaseChannel,
               custom_config: Dict[str, Any], labeled_splits: Sequence[str],
               clean_splits: Sequence[str]):
    super().__init__(spec=spec.BackboneFeaturesSpec(**{
        spec.EXAMPLES_KEY: examples, spec.TRANSFORM_GRAPH_KEY: transform_graph,
        spec.CUSTOM_CONFIG_KEY: json.dumps(custom_config, sort_keys=True),
        spec.LABELED_SPLITS_KEY: json.dumps(list(labeled_splits)),
        spec.CLEAN_SPLITS_KEY: json.dumps(list(clean_splits)),
        spec.FEATURES_KEY: types.Channel(type=standard_artifacts.Examples)}))
