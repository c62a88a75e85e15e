"""The pipeline's DAG: one `create_pipeline(config)` for every orchestrator.

  ImageExampleGen -> StatisticsGen -> ExampleValidator <- ImportSchemaGen
        |                  |                 |                |
        |                  +-----------> DataGate <-----------+
        |                        stops the run on bad data;
        |                        Transform waits for it
        +--------------------> Transform <--------------------+
        |                          | transform graph
        +-----------------------> Trainer -> Evaluator (<- latest blessed model)
                                   |            |
                 (LabelQueue)  <---+     RegistryPusher

With `data.unlabeled_path`, ExampleGen also writes an `unlabeled` split: the
DataGate validates it (ExampleValidator skips it), the Trainer learns from
it after `train`, the Evaluator never sees it, and
the LabelQueue ranks it: which images to label next.

With `training.beam_features`, BackboneFeatures (the frozen backbone as a
Beam step) stands between ExampleGen and Transform's graph on one side and
the Trainer on the other: the Trainer's `examples` are its features.
"""

import os
from typing import Any, Dict, Optional

from ml_metadata.proto import metadata_store_pb2
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.v1.extensions import google_cloud_ai_platform as vertex

from components.backbone_features.component import BackboneFeatures
from components.contracts import EVAL_SPLIT, TRAIN_SPLIT, UNLABELED_SPLIT, is_remote
from components.data_gate.component import DataGate
from components.evaluator.eval_config import make_eval_config
from components.image_example_gen.component import ImageExampleGen, has_fixed_split
from components.label_queue.component import LabelQueue
from components.registry_pusher.component import RegistryPusher
from models import preprocessing
from models import signatures
from models.backbones import get_backbone
from models.settings import ModelSettings

from pipeline import schema
from pipeline.beam_args import beam_pipeline_args
from pipeline.config import REPO_ROOT, Config

TRANSFORM_MODULE = os.path.join('models', 'preprocessing.py')
TRAINER_MODULE = os.path.join('models', 'trainer', 'task.py')


def image_size(config: Config) -> int:
  return config.model.image_size or get_backbone(config.model.backbone).default_image_size


def model_settings(config: Config) -> ModelSettings:
  """What Transform's and the Trainer's module files are told (models/settings.py)."""
  return ModelSettings(
      class_names=tuple(schema.class_names(config.data.schema_file)),
      image_size=image_size(config), max_image_pixels=config.data.max_image_pixels,
      model=config.model, augmentation=config.augmentation, training=config.training,
      semi_supervised=config.semi_supervised, data_quality=config.data_quality,
      ood=config.ood)


def components_config(config: Config) -> Dict[str, Any]:
  """The `custom_config` Transform and the Trainer receive."""
  return model_settings(config).to_custom_config()


def path_in_repo(path: str) -> Optional[str]:
  """`path` relative to the repository root, or None when it lies outside it
  (a remote URI, or a local path elsewhere); only such paths move with the code."""
  if is_remote(path):
    return None
  relative = os.path.relpath(os.path.abspath(path), REPO_ROOT)
  return None if relative.startswith(os.pardir) else relative


def evaluator_config(config: Config) -> tfma.EvalConfig:
  """The Evaluator's metrics and the quality gate's thresholds."""
  return make_eval_config(
      schema.class_names(config.data.schema_file),
      signature_name=signatures.EXAMPLES_SIGNATURE,
      label_key=preprocessing.LABEL_KEY,
      min_accuracy=config.evaluation.min_accuracy,
      max_accuracy_drop=config.evaluation.max_accuracy_drop)


def vertex_training(config: Config) -> Dict[str, Any]:
  """The `custom_config` keys that make TFX's Vertex AI Trainer extension run
  the same module file as a Vertex AI Training custom job: one replica of
  `gcp.training_machine_type` (and its GPUs) running `deploy.image`, which
  holds the code at `deploy.code_root`."""
  machine_spec = {'machine_type': config.gcp.training_machine_type}
  if config.gcp.training_accelerator_count:
    machine_spec.update(accelerator_type=config.gcp.training_accelerator_type,
                        accelerator_count=config.gcp.training_accelerator_count)
  return {
      vertex.ENABLE_VERTEX_KEY: True,
      vertex.VERTEX_REGION_KEY: config.gcp.region,
      vertex.TRAINING_ARGS_KEY: {
          'project': config.gcp.project,
          'worker_pool_specs': [{
              'machine_spec': machine_spec,
              'replica_count': 1,
              'container_spec': {'image_uri': config.deploy.image},
          }],
      },
  }


def local_metadata(config: Config) -> metadata_store_pb2.ConnectionConfig:
  """The SQLite store that local, Beam and Airflow runs record lineage in."""
  return tfx.orchestration.metadata.sqlite_metadata_connection_config(
      config.pipeline.metadata_path)


def create_local_pipeline(config: Config) -> tfx.dsl.Pipeline:
  """The pipeline as this machine runs it (LocalDagRunner, BeamDagRunner,
  Airflow): lineage in the output folder's SQLite store, and the schema
  imported from its content-addressed copy there (`schema.pin`), so an edited
  schema is imported again instead of taken from the cache. In a container
  image (`compile`), the schema changes only with the image."""
  pinned = schema.pin_file(config.data.schema_file, config.pipeline.output_dir)
  return create_pipeline(config.with_schema_file(pinned),
                         metadata_connection_config=local_metadata(config))


def create_pipeline(
    config: Config,
    code_root: str = REPO_ROOT,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
) -> tfx.dsl.Pipeline:
  """Builds the TFX pipeline.

  Args:
    config: the validated configuration.
    code_root: where this repository lives when the components run; a
      container image's WORKDIR for remote targets. Module files, and any
      configured path inside the repository (the schema, the bundled data),
      are resolved under it.
    metadata_connection_config: the MLMD store; None for orchestrators that
      bring their own (Kubeflow / Vertex AI Pipelines).
  """
  custom_config = components_config(config)

  def at_run_time(path: str) -> str:
    relative = path_in_repo(path)
    return path if relative is None else os.path.join(code_root, relative)

  example_gen = ImageExampleGen(
      at_run_time(config.data.path), config.data.eval_fraction,
      fixed_split=(config.data.split == 'folders' or (
          config.data.split == 'auto' and has_fixed_split(config.data.path))),
      max_image_pixels=config.data.max_image_pixels,
      unlabeled_dir=(at_run_time(config.data.unlabeled_path)
                     if config.data.unlabeled_path else ''),
      max_file_bytes=config.data.max_file_bytes,
      follow_external_symlinks=config.data.follow_external_symlinks)
  schema_gen = tfx.components.ImportSchemaGen(
      schema_file=at_run_time(config.data.schema_file))
  # With the schema, statistics treat the image feature as bytes (its
  # image_domain): sizes only, no count of distinct images.
  statistics_gen = tfx.components.StatisticsGen(
      examples=example_gen.outputs['examples'], schema=schema_gen.outputs['schema'])
  # The unlabeled split has a placeholder label the schema's domain does not
  # hold: the DataGate validates it in the schema's UNLABELED environment.
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema'],
      exclude_splits=[UNLABELED_SPLIT])

  # Dataset-level checks (classes, sizes, splits, labels outside the schema,
  # images under two labels); Transform, and so everything after it, waits
  # for the gate to pass.
  data_gate = DataGate(
      examples=example_gen.outputs['examples'],
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema'],
      anomalies=example_validator.outputs['anomalies'],
      min_images_per_class=config.data.min_images_per_class)

  # Transform only analyzes (the label vocabulary) and writes the transform
  # graph: materialized float32 pixels would be ~7x the encoded images on disk
  # and held in DirectRunner's memory. The graph runs instead inside the
  # Trainer's input pipeline and inside every exported signature
  # (docs/design.md, "Data path"). StatisticsGen already describes the raw data.
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      module_file=os.path.join(code_root, TRANSFORM_MODULE),
      custom_config=custom_config,
      materialize=False,
      disable_statistics=True)
  transform.add_upstream_node(data_gate)

  # The Trainer reads train_files[0] as the labeled split, any other as the
  # unlabeled one, which it learns from only with semi_supervised.enabled.
  unlabeled_splits = ([UNLABELED_SPLIT] if config.data.unlabeled_path
                      and config.semi_supervised.enabled else [])
  trainer_examples = example_gen.outputs['examples']
  backbone_features = None
  if config.training.beam_features:
    # The backbone's pass as a Beam step; the Trainer gets features, not pixels.
    backbone_features = BackboneFeatures(
        examples=example_gen.outputs['examples'],
        transform_graph=transform.outputs['transform_graph'],
        custom_config=custom_config, labeled_splits=[TRAIN_SPLIT],
        clean_splits=[EVAL_SPLIT, *unlabeled_splits])
    trainer_examples = backbone_features.outputs['features']
  trainer_inputs = dict(
      module_file=os.path.join(code_root, TRAINER_MODULE),
      examples=trainer_examples,
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      train_args=(tfx.proto.TrainArgs(splits=[TRAIN_SPLIT, *unlabeled_splits])
                  if unlabeled_splits else None))
  if config.gcp.training_machine_type:
    trainer = vertex.Trainer(
        **trainer_inputs, custom_config={**custom_config, **vertex_training(config)})
  else:
    trainer = tfx.components.Trainer(**trainer_inputs, custom_config=custom_config)

  baseline_resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(
          type=tfx.types.standard_artifacts.ModelBlessing),
  ).with_id('latest_blessed_model_resolver')

  # No example_splits: TFX's Evaluator then evaluates the 'eval' split only,
  # never the unlabeled one.
  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=baseline_resolver.outputs['model'],
      eval_config=evaluator_config(config))

  pusher = RegistryPusher(
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      evaluation=evaluator.outputs['evaluation'],
      examples=example_gen.outputs['examples'],
      transform_graph=transform.outputs['transform_graph'],
      registry_dir=config.pipeline.registry,
      model_name=config.pipeline.model_name,
      max_quantized_drop=config.export.max_quantized_drop,
      representative_images=config.export.representative_images,
      score_images=config.export.score_images)

  components = [
      example_gen, statistics_gen, schema_gen, example_validator,
      data_gate, transform, trainer, baseline_resolver, evaluator, pusher,
  ]
  if backbone_features is not None:
    components.insert(components.index(trainer), backbone_features)
  if config.data.unlabeled_path:
    components.append(LabelQueue(
        model=trainer.outputs['model'], examples=example_gen.outputs['examples'],
        transform_graph=transform.outputs['transform_graph'],
        unlabeled_dir=at_run_time(config.data.unlabeled_path),
        model_run=trainer.outputs['model_run'], labeled_dir=at_run_time(config.data.path),
        check_labels=config.labeling.check_labels if config.data_quality.enabled else 0,
        queue_size=config.labeling.queue_size,
        candidate_factor=config.labeling.candidate_factor,
        uncertainty=config.labeling.uncertainty))

  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline.name,
      pipeline_root=config.pipeline.pipeline_root,
      components=components,
      enable_cache=config.pipeline.enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args(config))
