"""The pipeline's whole configuration, in one typed place.

Every knob a user can turn lives in one of the frozen dataclasses below. A run
builds its config from the defaults, then an optional YAML file, then
`--set section.key=value` overrides, and validates it once; components receive
the values they need through `custom_config`, never through module constants.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from typing import Any, Mapping, Sequence

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_SPLITS = ('auto', 'folders', 'stratified')
BEAM_RUNNERS = ('direct', 'dataflow', 'flink', 'spark')


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the labeled images are and how they are split."""
  # One sub-folder per class, or train/<class>/ + eval/<class>/ for a fixed split.
  path: str = os.path.join(REPO_ROOT, 'data', 'fashion_mnist_sample')
  # 'folders': train/ + eval/ sub-folders; 'stratified': each class split by
  # eval_fraction; 'auto': 'folders' when both exist (looked at when the
  # pipeline is built, so remote targets must say which).
  split: str = 'auto'
  # Share of each class held out for evaluation when the split is not fixed.
  eval_fraction: float = 0.2
  # The curated schema; its `label` domain is the list of classes, in id order.
  # Left unnamed, `pipeline run --data DIR` derives one from DIR's class folders.
  schema_file: str = os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt')
  # The data gate (components/data_gate/) stops a run before Transform when a
  # class of the schema has fewer images than this, over all splits (it also
  # needs every class in both the train and the eval split).
  min_images_per_class: int = 5
  # Decompression-bomb guard: an image whose header declares more pixels
  # (width x height, x frames for a GIF) is quarantined at ingest and refused by
  # the transform graph at serving time, before anything is allocated. Decoding
  # costs 3 bytes a pixel (uint8 RGB), 12 as float32 while resizing: the default
  # 50 M pixels is ~150 MB decoded and ~600 MB float per image in flight.
  max_image_pixels: int = 50_000_000
  # Files larger than this many bytes are quarantined at ingest without being
  # read (a symlink to a huge file would otherwise be read whole into memory).
  max_file_bytes: int = 64 * 2**20
  # Symlinks (to files or folders) that resolve outside the data folder are
  # followed; false quarantines what they lead to, unread.
  follow_external_symlinks: bool = True
  # A folder of unlabeled images (any layout below it, every file is one
  # image); '' = none. Ingested as the `unlabeled` split for semi-supervised
  # training and the label queue, never used for evaluation.
  unlabeled_path: str = ''


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network: a frozen pretrained backbone under a small head."""
  backbone: str = 'efficientnet_lite0'
  # 'imagenet', a path to a local weights file, or 'none' for random init.
  weights: str = 'imagenet'
  # Square input size in pixels; 0 picks the backbone's own default.
  image_size: int = 0


@dataclasses.dataclass(frozen=True)
class AugmentationConfig:
  """Keras preprocessing layers applied to training batches only."""
  horizontal_flip: bool = True
  rotation: float = 0.05      # fraction of a full turn
  zoom: float = 0.1           # fraction of the image size
  translation: float = 0.1    # fraction of the image size
  contrast: float = 0.1       # contrast factor range


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  """How the head is fitted (models/trainer/head.py) and, optionally, the
  backbone's top fine-tuned. Nothing here reads the eval split."""
  # Images per batch through the backbone (feature cache, fine-tuning).
  batch_size: int = 32
  # Folds of the cross-validation over the labeled train split that chooses
  # the head's regularisation and whether the unlabeled images help (fewer
  # when a class has fewer images).
  cv_folds: int = 5
  # Second phase: unfreeze the top `fine_tune_layers` layers (BatchNorm stays
  # frozen) and train for `fine_tune_epochs` at `fine_tune_learning_rate`.
  fine_tune_epochs: int = 0
  fine_tune_layers: int = 20
  fine_tune_learning_rate: float = 1e-5
  class_weights: bool = True
  seed: int = 42
  # Cap on fine-tuning steps per epoch; 0 means one pass over the train split.
  max_steps_per_epoch: int = 0
  # Randomly augmented views cached per labeled image, besides the clean one
  # (and its mirror image, with augmentation.horizontal_flip). 0 by default:
  # on the benchmark's data sets a head fitted on augmented views scored lower
  # on clean test images (docs/label_efficiency.md).
  cached_views: int = 0
  # Run the frozen backbone over the images as a Beam step before the Trainer
  # (components/backbone_features: RunInference, on `beam.runner` with the
  # other data steps, its output cached like any artifact); the Trainer then
  # fits the head on those features and reads no pixels. Off by default: on
  # one machine the Trainer's own pass is as fast and writes nothing
  # (docs/scale.md). Fine-tuning needs the images, so not with fine_tune_epochs.
  beam_features: bool = False


@dataclasses.dataclass(frozen=True)
class SemiSupervisedConfig:
  """Self-training on the unlabeled split (`data.unlabeled_path`), used only
  when cross-validation on the labeled train split says it helps; see
  models/trainer/head.py and docs/label_efficiency.md."""
  # Used only when the run has unlabeled images.
  enabled: bool = True
  # Rounds of pseudo-labelling; each refits the head with more pseudo-labels.
  rounds: int = 3
  # Share of the unlabeled images pseudo-labelled by the last round, split
  # equally among classes, each class taking those it is surest of.
  pseudo_label_fraction: float = 0.8
  # Weight of a pseudo-labelled image against a labeled one.
  pseudo_label_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class DataQualityConfig:
  """The Trainer's audit of the labeled images on the backbone's cached
  features: suspect labels, near-duplicates and outliers
  (models/trainer/data_quality.py, docs/data_quality.md)."""
  # Off: no audit, and the Trainer does not read the eval split at all.
  enabled: bool = True
  # Two images are near-duplicates from this cosine similarity of their
  # normalised features up, or, when each is the other's nearest neighbour
  # (similarity 0.8 or more), from this margin over each one's next-nearest
  # (models/trainer/data_quality.py; measured in docs/data_quality.md).
  near_duplicate_similarity: float = 0.95
  near_duplicate_margin: float = 0.08
  # Near-duplicates under two labels: 'warn' lists them in the report,
  # 'stop' fails the Trainer, like the data gate's exact duplicates.
  cross_class_duplicates: str = 'warn'
  # Outliers: mean distance to the nearest labeled images this many robust
  # standard deviations above the median.
  outlier_mads: float = 4.0


@dataclasses.dataclass(frozen=True)
class OodConfig:
  """"unknown" for images of no known class (models/ood.py,
  docs/trust.md): exported in every serving signature and the TFLite model."""
  enabled: bool = True
  # Share of images like the train images the threshold calls unknown.
  false_rejection_rate: float = 0.05
  # The score averages the cosine distance to this many nearest train images.
  neighbours: int = 5
  # Labeled train images kept as the reference (D float32 each in the model;
  # 1,000 x 1,280 = 5 MB for EfficientNet-Lite0), drawn class by class.
  max_reference_images: int = 1000


@dataclasses.dataclass(frozen=True)
class LabelingConfig:
  """The LabelQueue (components/label_queue/, docs/labeling.md): which
  unlabeled images to label next, when the run has an unlabeled split."""
  queue_size: int = 20
  # Diversity is sought among the queue_size x candidate_factor most uncertain.
  candidate_factor: int = 5
  uncertainty: str = 'margin'      # margin | entropy
  # The most likely wrong labels of the Trainer's data-quality audit, put
  # ahead of the unlabeled images as "check this label"; 0: none.
  check_labels: int = 10


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
  """The quality gate the Evaluator applies before anything is pushed."""
  # A model is blessed only if its eval accuracy is at least this ...
  min_accuracy: float = 0.6
  # ... and it is at most this much (absolute) below the last blessed model.
  max_accuracy_drop: float = 0.02


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """The quantized TFLite models the RegistryPusher publishes beside the float
  one (docs/serving.md#quantized-models-for-devices)."""
  # A quantized model is published only if its eval accuracy is at most this
  # much (absolute, a fraction) below the SavedModel's on the same images.
  max_quantized_drop: float = 0.01
  # Train images (classes in turn, the same ones every run) the int8 model's
  # activation ranges are calibrated on.
  representative_images: int = 200
  # Eval images (chosen the same way) the SavedModel and every TFLite model
  # are scored on; the whole eval split when it is smaller.
  score_images: int = 1000


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Where a run writes and how TFX executes it."""
  name: str = 'image-classifier'
  # Everything a run produces lives under here unless overridden below.
  output_dir: str = os.path.join(REPO_ROOT, 'outputs')
  # Versioned model registry: <registry_dir>/<model_name>/<version>/.
  registry_dir: str = ''
  model_name: str = 'image_classifier'
  enable_cache: bool = True

  @property
  def pipeline_root(self) -> str:
    return os.path.join(self.output_dir, 'pipeline_root')

  @property
  def metadata_path(self) -> str:
    return os.path.join(self.output_dir, 'metadata.sqlite')

  @property
  def registry(self) -> str:
    return self.registry_dir or os.path.join(self.output_dir, 'registry')


@dataclasses.dataclass(frozen=True)
class BeamConfig:
  """Where the Beam components (ExampleGen, StatisticsGen, Transform, Evaluator) run.

  `runner` picks one of the argument sets built in `pipeline/beam_args.py`;
  the Trainer and the Pusher are not Beam jobs and run wherever the
  orchestrator runs them.
  """
  runner: str = 'direct'       # direct | dataflow | flink | spark
  # direct: worker processes; 1 runs in-process, N > 1 (or 0 = one per CPU)
  # runs DirectRunner in multi_processing mode. dataflow: the most workers.
  workers: int = 1
  # dataflow: a gs:// folder for staging and temporary files.
  temp_location: str = ''
  # flink: the JobManager's REST address, host:port.
  flink_master: str = ''
  # spark: the master URL, spark://host:port.
  spark_master_url: str = ''
  # Appended last, so they can override anything above.
  extra_args: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DeployConfig:
  """What the scheduled targets (Kubeflow / Vertex AI Pipelines, Airflow) and
  remote Beam workers need: the container, where code lives in it, the schedule."""
  # Built from the Dockerfile; every remote step and Beam worker runs it.
  image: str = 'image-classifier-pipeline:latest'
  # The Dockerfile's WORKDIR: module files and the schema resolve under it.
  code_root: str = '/pipeline'
  # Cron expression of recurring runs (Vertex schedule, KFP recurring run, Airflow).
  schedule: str = '0 3 * * *'
  timezone: str = 'UTC'


@dataclasses.dataclass(frozen=True)
class GcpConfig:
  """Google Cloud project used by Vertex AI Pipelines and Dataflow."""
  project: str = ''
  region: str = 'us-central1'
  # Identity the runs execute as; empty uses the project's default.
  service_account: str = ''
  # The Trainer as a Vertex AI Training custom job on this machine type (e.g.
  # 'n1-standard-8'), with `training_accelerator_count` GPUs of
  # `training_accelerator_type` (e.g. 'NVIDIA_TESLA_T4'); empty: the Trainer
  # runs in the pipeline's own step like every other component. For runs on
  # Vertex AI / Kubeflow Pipelines (remote pipeline root).
  training_machine_type: str = ''
  training_accelerator_type: str = ''
  training_accelerator_count: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  augmentation: AugmentationConfig = AugmentationConfig()
  training: TrainingConfig = TrainingConfig()
  semi_supervised: SemiSupervisedConfig = SemiSupervisedConfig()
  data_quality: DataQualityConfig = DataQualityConfig()
  ood: OodConfig = OodConfig()
  labeling: LabelingConfig = LabelingConfig()
  evaluation: EvaluationConfig = EvaluationConfig()
  export: ExportConfig = ExportConfig()
  pipeline: PipelineConfig = PipelineConfig()
  beam: BeamConfig = BeamConfig()
  deploy: DeployConfig = DeployConfig()
  gcp: GcpConfig = GcpConfig()

  def validate(self) -> 'Config':
    """Fails early, with the key's name, on values no run could use."""
    checks = [
        (0.0 < self.data.eval_fraction < 1.0, 'data.eval_fraction must be in (0, 1)'),
        (self.data.split in DATA_SPLITS, f'data.split must be one of {DATA_SPLITS}'),
        (self.data.min_images_per_class >= 2,
         'data.min_images_per_class must be at least 2 (one train, one eval image)'),
        (self.data.max_image_pixels > 0, 'data.max_image_pixels must be positive'),
        (self.data.max_file_bytes > 0, 'data.max_file_bytes must be positive'),
        (self.model.image_size == 0 or self.model.image_size >= 32,
         'model.image_size must be 0 (backbone default) or at least 32'),
        (self.training.batch_size > 0, 'training.batch_size must be positive'),
        (self.training.cv_folds >= 2, 'training.cv_folds must be at least 2'),
        (self.training.fine_tune_epochs >= 0, 'training.fine_tune_epochs must be >= 0'),
        (self.training.cached_views >= 0, 'training.cached_views must be >= 0'),
        (not (self.training.beam_features and self.training.fine_tune_epochs),
         'training.beam_features gives the Trainer features, not images: set '
         'training.fine_tune_epochs=0 or training.beam_features=false'),
        (self.semi_supervised.rounds >= 1, 'semi_supervised.rounds must be at least 1'),
        (0.0 < self.semi_supervised.pseudo_label_fraction <= 1.0,
         'semi_supervised.pseudo_label_fraction must be in (0, 1]'),
        (self.semi_supervised.pseudo_label_weight > 0.0,
         'semi_supervised.pseudo_label_weight must be positive'),
        (0.0 < self.data_quality.near_duplicate_similarity <= 1.0,
         'data_quality.near_duplicate_similarity must be in (0, 1]'),
        (0.0 <= self.data_quality.near_duplicate_margin <= 1.0,
         'data_quality.near_duplicate_margin must be in [0, 1]'),
        (self.data_quality.cross_class_duplicates in ('warn', 'stop'),
         "data_quality.cross_class_duplicates must be 'warn' or 'stop'"),
        (self.data_quality.outlier_mads > 0.0, 'data_quality.outlier_mads must be positive'),
        (0.0 < self.ood.false_rejection_rate < 1.0,
         'ood.false_rejection_rate must be in (0, 1)'),
        (self.ood.neighbours >= 1 and self.ood.max_reference_images >= 2,
         'ood.neighbours must be at least 1 and ood.max_reference_images at least 2'),
        (self.labeling.queue_size >= 1 and self.labeling.candidate_factor >= 1,
         'labeling.queue_size and candidate_factor must be at least 1'),
        (self.labeling.check_labels >= 0, 'labeling.check_labels must be >= 0'),
        (self.labeling.uncertainty in ('margin', 'entropy'),
         "labeling.uncertainty must be 'margin' or 'entropy'"),
        (0.0 <= self.evaluation.min_accuracy <= 1.0,
         'evaluation.min_accuracy must be in [0, 1]'),
        (self.evaluation.max_accuracy_drop >= 0.0,
         'evaluation.max_accuracy_drop must be >= 0'),
        (0.0 <= self.export.max_quantized_drop <= 1.0,
         'export.max_quantized_drop must be in [0, 1]'),
        (self.export.representative_images >= 1,
         'export.representative_images must be at least 1'),
        (self.export.score_images >= 1, 'export.score_images must be at least 1'),
        (self.pipeline.model_name.replace('_', '').replace('-', '').isalnum(),
         'pipeline.model_name may hold only letters, digits, - and _'),
        (self.beam.runner in BEAM_RUNNERS,
         f'beam.runner must be one of {BEAM_RUNNERS}'),
        (self.beam.workers >= 0, 'beam.workers must be >= 0'),
        (len(self.deploy.schedule.split()) == 5,
         'deploy.schedule must be a 5-field cron expression'),
        (not self.gcp.training_machine_type or self.gcp.project,
         'gcp.training_machine_type needs gcp.project, the project its jobs run in'),
        (self.gcp.training_machine_type or not (
            self.gcp.training_accelerator_type or self.gcp.training_accelerator_count),
         'gcp.training_accelerator_type/count need gcp.training_machine_type'),
        ((self.gcp.training_accelerator_count > 0) ==
         bool(self.gcp.training_accelerator_type),
         'gcp.training_accelerator_type and gcp.training_accelerator_count (>= 1) '
         'go together'),
    ]
    errors = [message for ok, message in checks if not ok]
    if errors:
      raise ValueError('Invalid configuration:\n  ' + '\n  '.join(errors))
    return self

  def with_schema_file(self, schema_file: str) -> 'Config':
    """The same config reading its schema from `schema_file` (a derived or
    content-addressed copy, pipeline/schema.py)."""
    return dataclasses.replace(
        self, data=dataclasses.replace(self.data, schema_file=schema_file))

  def check_local_folders(self) -> 'Config':
    """A local run can work: no step is sent to Vertex AI Training, and its
    input folders exist. Checked before anything heavy is imported or
    written, so a typo fails in a second."""
    if self.gcp.training_machine_type:
      raise ValueError('gcp.training_machine_type sends the Trainer to Vertex AI '
                       'Training, which cannot read a local run\'s artifacts: '
                       'leave it empty here, set it for `compile --target kubeflow`')
    if not os.path.isdir(self.data.path):
      raise FileNotFoundError(f'Image folder {self.data.path} does not exist')
    if self.data.unlabeled_path and not os.path.isdir(self.data.unlabeled_path):
      raise FileNotFoundError(f'Unlabeled image folder {self.data.unlabeled_path} '
                              'does not exist (data.unlabeled_path, --unlabeled)')
    return self


# String keys whose default is empty take an empty value as well (`--set
# data.unlabeled_path=`, or `unlabeled_path:` in a file): it means none. Every
# other key refuses one, which is usually an unset shell variable; so do these,
# whose empty default stands for a path derived from another key.
_EMPTY_REFUSED = {'pipeline.registry_dir': 'leave it out for <output_dir>/registry'}
_BOOLS = {'true': True, 'yes': True, 'on': True, 'false': False, 'no': False, 'off': False}


class _Text(str):
  """A `--set` value as written: read by its key's declared type, never as
  YAML (to which a cron such as `*/5 * * * *` is a broken alias)."""


def load_config(config_file: str | None = None,
                overrides: Sequence[str] = ()) -> Config:
  """Defaults, then the YAML file, then `section.key=value` overrides."""
  return _build(Config, _named_values(config_file, overrides)).validate()


def named_keys(config_file: str | None = None,
               overrides: Sequence[str] = ()) -> set[str]:
  """The `section.key`s the YAML file or the overrides set, whatever their
  value: what a run was told, as opposed to left at its default."""
  return {f'{section}.{name}'
          for section, names in _named_values(config_file, overrides).items()
          for name in names}


def _named_values(config_file: str | None,
                  overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
  """section -> key -> value, as the YAML file and then the overrides set them."""
  values: dict[str, dict[str, Any]] = {}
  if config_file:
    with open(config_file, encoding='utf-8') as f:
      try:
        loaded = yaml.safe_load(f) or {}
      except yaml.YAMLError as error:
        raise ValueError(f'{config_file}: not valid YAML: {_yaml_problem(error)}; '
                         'quote a value that starts with * & ! or holds ": "') from None
    if not isinstance(loaded, Mapping):
      raise ValueError(f'{config_file}: expected a mapping of sections')
    for section, section_values in loaded.items():
      if not isinstance(section_values or {}, Mapping):
        raise ValueError(f'{config_file}: section {section!r} must be a mapping')
      values.setdefault(section, {}).update(section_values or {})
  for override in overrides:
    key, sep, raw = override.partition('=')
    section, dot, name = key.strip().partition('.')
    if not sep or not dot:
      raise ValueError(f'--set {override!r}: expected section.key=value')
    values.setdefault(section, {})[name] = _Text(raw)
  return values


def _yaml_problem(error: yaml.YAMLError) -> str:
  """What PyYAML found and where, on one line (its own message takes five)."""
  mark = getattr(error, 'problem_mark', None)
  what = ': '.join(part for part in (getattr(error, 'context', None),
                                     getattr(error, 'problem', None)) if part)
  return (what or str(error).splitlines()[0]) + (
      f' (line {mark.line + 1}, column {mark.column + 1})' if mark else '')


def _build(cls: type, values: Mapping[str, Any], prefix: str = '') -> Any:
  """Instantiates dataclass `cls` from nested plain values, checking names and types."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f'Unknown config key(s) {[prefix + k for k in unknown]}; '
                     f'valid under {prefix or "top level"!r}: {sorted(fields)}')
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for name, value in values.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      if not isinstance(value, Mapping):
        raise ValueError(f'{prefix}{name} must be a mapping')
      kwargs[name] = _build(hint, value, f'{prefix}{name}.')
    else:
      kwargs[name] = _coerce(value, hint, f'{prefix}{name}', fields[name].default)
  return dataclasses.replace(cls(), **kwargs)


def _coerce(value: Any, hint: Any, key: str, default: Any) -> Any:
  """`value` (from YAML, or a `--set` text) as `key`'s type `hint`."""
  if isinstance(value, _Text):
    value = _parse(value, hint, key)
  if typing.get_origin(hint) is tuple:
    items = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
    return tuple(str(item) for item in items)
  if value is None or value == '':     # `key=`, or `key:` with nothing after it
    if hint is not str:
      raise ValueError(f'{key} must be {hint.__name__}, got an empty value')
    if default != '' or key in _EMPTY_REFUSED:
      note = _EMPTY_REFUSED.get(key)
      raise ValueError(f'{key} must not be empty' + (f' ({note})' if note else ''))
    return ''
  if hint is float and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
    raise ValueError(f'{key} must be {hint.__name__}, got {value!r}')
  if hint is float and not math.isfinite(value):
    raise ValueError(f'{key} must be a finite float, got {value!r}')
  return value


def _parse(text: str, hint: Any, key: str) -> Any:
  """A `--set` text as `key`'s type: a string as written, without quotes
  around it; a list in YAML's flow style, `[--a, --b]`, or one item."""
  text = text.strip()
  if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
    text = text[1:-1]
  if hint is str:
    return text
  if not text:
    return None
  if typing.get_origin(hint) is tuple:
    if not text.startswith('['):
      return [text]
    try:
      items = yaml.safe_load(text)
    except yaml.YAMLError:
      items = None
    if not isinstance(items, list):
      raise ValueError(f'{key} must be a list such as [--a, --b], got {text!r}')
    return items
  if hint is bool:
    if text.lower() not in _BOOLS:
      raise ValueError(f'{key} must be bool, got {text!r}')
    return _BOOLS[text.lower()]
  try:
    return hint(text)
  except ValueError:
    raise ValueError(f'{key} must be {hint.__name__}, got {text!r}') from None


def to_dict(config: Config) -> dict[str, Any]:
  """Plain nested dict of the config, for logs and run records."""
  return dataclasses.asdict(config)
