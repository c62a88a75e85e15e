"""What the tests share besides fixtures (tests/conftest.py holds those): the
bundled sample copied into small real image folders, the end-to-end workspace
and its runs, the pipeline's own component configuration, and a real TF
Transform over a few rows."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(REPO_ROOT, 'data', 'fashion_mnist_sample')


def copy_sample(destination: str, classes, per_class: int) -> str:
  """Copies the first `per_class` bundled images of each class; returns the folder."""
  import shutil  # pylint: disable=g-import-not-at-top
  for name in classes:
    os.makedirs(os.path.join(destination, name))
    for file_name in sorted(os.listdir(os.path.join(SAMPLE_DIR, name)))[:per_class]:
      shutil.copy(os.path.join(SAMPLE_DIR, name, file_name),
                  os.path.join(destination, name, file_name))
  return destination


def sample_bytes(label: str, index: int) -> bytes:
  """The encoded bytes of the `index`-th bundled image of class `label`."""
  folder = os.path.join(SAMPLE_DIR, label)
  with open(os.path.join(folder, sorted(os.listdir(folder))[index]), 'rb') as f:
    return f.read()


def artifact(artifact_class, uri: str, splits=None):
  """An artifact of `artifact_class` at `uri` (with `splits`), as an executor gets it."""
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  made = artifact_class()
  made.uri = uri
  if splits:
    made.split_names = artifact_utils.encode_split_names(splits)
  return made


def input_channels(spec_class):
  """A channel of the declared type for every input of a ComponentSpec class,
  by key: what a component is built from in its wiring test."""
  from tfx import types  # pylint: disable=g-import-not-at-top
  return {key: types.Channel(type=parameter.type)
          for key, parameter in spec_class.INPUTS.items()}


def write_examples_split(examples_uri: str, split: str, records) -> None:
  """A GZIP TFRecord of tf.Examples with ImageExampleGen's features, from
  (image bytes, label, source path) records."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from components import example_splits  # pylint: disable=g-import-not-at-top

  def feature(value):
    if isinstance(value, int):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[value if isinstance(value, bytes) else value.encode()]))

  folder = example_splits.split_dir(examples_uri, split)
  os.makedirs(folder)
  with tf.io.TFRecordWriter(os.path.join(folder, 'data.gz'), 'GZIP') as writer:
    for image, label, source_path in records:
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          name: feature(value) for name, value in {
              'image': image, 'label': label, 'source_path': source_path,
              'image_id': hashlib.sha256(image).hexdigest(),
              'height': 28, 'width': 28, 'format': 'png'}.items()})).SerializeToString())


# The end-to-end workspace, shared by every test module that needs a real run's
# outputs (ML Metadata, artifacts, a published model): tests may read it, and
# must copy anything they change.
E2E_CLASSES = ['trouser', 'bag', 'sneaker']


def copy_unlabeled(destination: str, classes, skip: int, count: int) -> str:
  """Copies `count` bundled images of each class after the first `skip`, into
  one flat folder and under names that hide the class; returns the folder."""
  import shutil  # pylint: disable=g-import-not-at-top
  os.makedirs(destination)
  for name in classes:
    for file_name in sorted(os.listdir(os.path.join(SAMPLE_DIR, name)))[skip:skip + count]:
      shutil.copy(os.path.join(SAMPLE_DIR, name, file_name),
                  os.path.join(destination, 'unlabeled_' + file_name.rsplit('_', 1)[1]))
  return destination


def make_e2e_workspace(root):
  """A 3-class copy of the sample, unlabeled images of the same classes, its
  schema, and the small settings (64 px images) of every real run in the
  tests, under `root`."""
  from pipeline import config as config_lib, schema  # pylint: disable=g-import-not-at-top
  data_dir = copy_sample(str(root / 'images'), E2E_CLASSES, 15)
  unlabeled_dir = copy_unlabeled(str(root / 'unlabeled'), E2E_CLASSES, 15, 8)
  schema_file = root / 'schema.pbtxt'
  schema_file.write_text(schema.derive(config_lib.DataConfig.schema_file, E2E_CLASSES))
  overrides = [
      f'data.path={data_dir}', f'data.schema_file={schema_file}',
      f'data.unlabeled_path={unlabeled_dir}',
      f'pipeline.output_dir={root / "outputs"}',
      'model.image_size=64', 'training.batch_size=8',
      'evaluation.min_accuracy=0.6', 'evaluation.max_accuracy_drop=0.05',
  ]
  return {'root': root, 'data': data_dir, 'unlabeled': unlabeled_dir,
          'overrides': overrides,
          'output_dir': str(root / 'outputs')}


def run_e2e_pipeline(workspace, *extra, orchestrator='local'):
  """Runs the pipeline in the workspace with extra `section.key=value` overrides."""
  from pipeline import config as config_lib, runner  # pylint: disable=g-import-not-at-top
  return runner.run_local(
      config_lib.load_config(None, [*workspace['overrides'], *extra]), orchestrator)


def model_settings(*overrides, class_names=None):
  """The ModelSettings Transform and the Trainer receive, built by the
  pipeline's own dag.model_settings from the default configuration with
  `section.key=value` overrides (and, if given, these class names)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from pipeline import config as config_lib, dag  # pylint: disable=g-import-not-at-top
  settings = dag.model_settings(config_lib.load_config(None, list(overrides)))
  if class_names is not None:
    settings = dataclasses.replace(settings, class_names=tuple(class_names))
  return settings


def analyze_and_transform(rows, image_size, class_names, with_names=False):
  """Runs preprocessing_fn through real TF Transform on Beam over
  (encoded image, label) rows; returns (transformed rows, transform output dir).
  `with_names`: the raw schema also has ImageExampleGen's `source_path` and
  `image_id`, as in a pipeline run (the Trainer reads them)."""
  import functools  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_transform.beam as tft_beam  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils  # pylint: disable=g-import-not-at-top
  from models import preprocessing  # pylint: disable=g-import-not-at-top

  feature_spec = {
      preprocessing.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
      preprocessing.LABEL_KEY: tf.io.FixedLenFeature([1], tf.string),
  }
  names = ('source_path', 'image_id') if with_names else ()
  feature_spec.update({name: tf.io.FixedLenFeature([1], tf.string) for name in names})
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(feature_spec))
  instances = [{preprocessing.IMAGE_KEY: [image], preprocessing.LABEL_KEY: [label],
                **{name: [b'-'] for name in names}} for image, label in rows]
  fn = functools.partial(preprocessing.preprocessing_fn, custom_config=model_settings(
      f'model.image_size={image_size}', class_names=class_names).to_custom_config())
  output_dir = tempfile.mkdtemp()
  with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
    (data, _), transform_fn = (
        (instances, metadata) | tft_beam.AnalyzeAndTransformDataset(
            fn, output_record_batches=False))
    _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
  metadata_io.write_metadata(
      metadata, os.path.join(output_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
  return data, output_dir


# The classes of `train_tiny_model` (tests/conftest.py's `trained`).
TRAINED_CLASSES = ['bag', 'sneaker', 'trouser']


def train_tiny_model(model_uri: str):
  """A real transform graph of TRAINED_CLASSES and, in `model_uri`, a small
  real SavedModel with the trainer's signatures but `from_pixels` (the
  backbone replaced by one untrained convolution, to save time; the pixels
  signature needs the real classifier's layers); returns the transform
  graph's folder."""
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  from models import signatures  # pylint: disable=g-import-not-at-top
  from models.classifier import POOLED_FEATURES_LAYER  # pylint: disable=g-import-not-at-top
  rows = [(sample_bytes(label, i), label) for label in TRAINED_CLASSES for i in range(2)]
  _, transform_dir = analyze_and_transform(rows, 32, TRAINED_CLASSES)
  tf_keras.utils.set_random_seed(3)
  images = tf_keras.Input([32, 32, 3])
  features = tf_keras.layers.GlobalAveragePooling2D(name=POOLED_FEATURES_LAYER)(
      tf_keras.layers.Conv2D(16, 3, strides=2, activation='relu')(images))
  model = tf_keras.Model(images, tf_keras.layers.Dense(len(TRAINED_CLASSES), 'softmax')(
      features))
  tf_transform_output = tft.TFTransformOutput(transform_dir)
  model.tft_layer = tf_transform_output.transform_features_layer()
  signatures.export(model, os.path.join(model_uri, 'Format-Serving'),
                    tf_transform_output, TRAINED_CLASSES)
  return transform_dir
