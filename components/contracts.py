"""Names shared between the steps and their readers: split and feature names,
the files and properties a step's artifact carries, the remote-path check.

A step writes under these names and every reader (another step, the run
summary, the report, the CLI) reads under them, so no module imports another
step's executor for a name. Pure constants: importing this never imports
TensorFlow.
"""

# Splits. The unlabeled folder's images become the `unlabeled` split with the
# placeholder label ''; they are never evaluated and never in the label check.
TRAIN_SPLIT = 'train'
EVAL_SPLIT = 'eval'
UNLABELED_SPLIT = 'unlabeled'
UNLABELED_LABEL = ''
# The schema environment of the unlabeled split, where `label` is not expected.
UNLABELED_ENVIRONMENT = 'UNLABELED'

# Features of ImageExampleGen's examples.
IMAGE_FEATURE = 'image'            # the encoded image bytes
LABEL_FEATURE = 'label'            # the class name
IMAGE_ID_FEATURE = 'image_id'      # sha256 of the bytes
SOURCE_PATH_FEATURE = 'source_path'  # the file, relative to its data folder

# ImageExampleGen: next to the splits, one JSON line per file not ingested and
# per image (content hash) found under two or more labels; their counts are
# properties of the Examples artifact.
QUARANTINE_FILE = 'quarantine.jsonl'
QUARANTINED_COUNT_PROPERTY = 'quarantined_count'
LABEL_CONFLICTS_FILE = 'label_conflicts.jsonl'
LABEL_CONFLICT_COUNT_PROPERTY = 'label_conflict_count'
UNLABELED_COUNT_PROPERTY = 'unlabeled_count'

# StatisticsGen's statistics of one split (`Split-<name>/FeatureStats.pb`).
STATISTICS_FILE = 'FeatureStats.pb'

# Transform: the vocabulary file holding the class names in id order.
LABEL_VOCABULARY = 'label'

# DataGate: its verdict and, per split, the anomalies it found.
DATA_GATE_REPORT_FILE = 'data_gate.json'
ANOMALIES_FILE = 'SchemaDiff.pb'

# BackboneFeatures (training.beam_features): per image, its label id, the
# backbone's pooled features under each view (view-major, views x dim
# floats) and ImageExampleGen's two names, for the Trainer.
LABEL_ID_FEATURE = 'label_id'
BACKBONE_FEATURES_FEATURE = 'backbone_features'

# Trainer: in the SavedModel's extra assets (so in every published version),
# the training history; in the ModelRun artifact, the data-quality audit's
# folder with its summary and three lists.
SAVED_MODEL_EXTRAS_DIR = 'assets.extra'
TRAINING_HISTORY_FILE = 'training_history.json'
DATA_QUALITY_DIR = 'data_quality'
DATA_QUALITY_SUMMARY_FILE = 'data_quality.json'
SUSPECT_LABELS_CSV = 'suspect_labels.csv'
NEAR_DUPLICATES_CSV = 'near_duplicates.csv'
OUTLIERS_CSV = 'outliers.csv'

# LabelQueue: the queue, its contact sheet and their counts.
QUEUE_CSV = 'label_queue.csv'
CONTACT_SHEET = 'contact_sheet.png'
QUEUED_PROPERTY = 'queued'
CHECK_LABELS_PROPERTY = 'labels_to_check'


def is_remote(path: str) -> bool:
  """True for an object-store URL (gs://, s3://, ...): no local file calls,
  no symlinks, no rename; tf.io.gfile only."""
  return '://' in path
