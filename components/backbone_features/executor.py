"""Executor of BackboneFeatures: RunInference of the transform graph and the
frozen backbone over each split, one features record per image.

The splits are read, embedded and written in one fused Beam stage (one
RunInference over the split-tagged records), so a worker holds the records
of the batches in flight, not a split, and loads the transform graph and
builds the classifier once for every split (`_BackboneHandler.load_model`).
A batch of `BATCH_IMAGES` records goes through a `tf.data` pipeline that
decodes the next sub-batch while the backbone embeds the current one, as in
the Trainer's own pass.
"""

import json
import logging
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.ml.inference import base as inference
import tensorflow as tf
import tensorflow_transform as tft
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components import artifact_readers
from components import example_splits
from components.backbone_features import spec
from components.contracts import IMAGE_ID_FEATURE, SOURCE_PATH_FEATURE
from models import classifier
from models import preprocessing
from models.settings import ModelSettings
from models.trainer import feature_cache

# Records per RunInference batch: several of the backbone's batches, so
# decoding overlaps embedding within a batch.
BATCH_IMAGES = 256
_FILE_PREFIX = 'features'


class _Embedding:
  """A worker's loaded transform graph and backbone, with each split's views."""

  def __init__(self, settings: ModelSettings, transform_graph_uri: str,
               labeled_splits: Sequence[str]):
    tf_transform_output = tft.TFTransformOutput(transform_graph_uri)
    self._transform = tf_transform_output.transform_features_layer()
    self._raw_spec = tf_transform_output.raw_feature_spec()
    model = classifier.build_classifier(
        settings, len(artifact_readers.class_names(transform_graph_uri)),
        preprocessing.TRANSFORMED_IMAGE_KEY)
    self._embedder = feature_cache.Embedder(classifier.feature_extractor(model))
    self._labeled_views = feature_cache.labeled_views(
        settings, model.get_layer(classifier.AUGMENTATION_LAYER))
    self._labeled_splits = set(labeled_splits)
    self._batch_size = settings.training.batch_size
    self._views = 0
    self._start = self._reported = time.perf_counter()

  def _batches(self, serialized: Sequence[bytes]) -> tf.data.Dataset:
    @tf.autograph.experimental.do_not_convert
    def transformed(records):
      raw = tf.io.parse_example(records, self._raw_spec)
      return (*feature_cache.transformed_batch(self._transform, raw),
              *(tf.reshape(raw[key], [-1]) for key in (SOURCE_PATH_FEATURE, IMAGE_ID_FEATURE)))
    return (tf.data.Dataset.from_tensor_slices(tf.constant(list(serialized), tf.string))
            .batch(self._batch_size)
            .map(transformed, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))

  def _records(self, split: str, serialized: Sequence[bytes]) -> List[Tuple[str, bytes]]:
    views = self._labeled_views if split in self._labeled_splits else [None]
    records = []
    for images, label_ids, source_paths, image_ids in self._batches(serialized):
      features = self._embedder.embed(images, views)
      records.extend(
          (split, feature_cache.encode_record(features[:, i], int(label_id), source_path,
                                              image_id))
          for i, (label_id, source_path, image_id) in enumerate(zip(
              label_ids.numpy(), source_paths.numpy(), image_ids.numpy())))
    self._views += len(records) * len(views)
    return records

  def records(self, batch: Sequence[Tuple[str, bytes]]) -> List[Tuple[str, bytes]]:
    """(split, features record) of each (split, serialized raw example)."""
    by_split: Dict[str, List[bytes]] = {}
    for split, serialized in batch:
      by_split.setdefault(split, []).append(serialized)
    records = [record for split, serialized in by_split.items()
               for record in self._records(split, serialized)]
    now = time.perf_counter()
    if now - self._reported >= feature_cache.PROGRESS_SECONDS:
      self._reported = now
      logging.info('BackboneFeatures: %d image views so far in this worker (%.1f/s).',
                   self._views, self._views / (now - self._start))
    return records


class _BackboneHandler(inference.ModelHandler):
  """RunInference's handler: (split, serialized raw example) in, (split,
  features record) out; one model per worker for every split."""

  def __init__(self, settings: ModelSettings, transform_graph_uri: str,
               labeled_splits: Sequence[str]):
    super().__init__()
    self._settings = settings
    self._transform_graph_uri = transform_graph_uri
    self._labeled_splits = list(labeled_splits)

  def load_model(self) -> _Embedding:
    return _Embedding(self._settings, self._transform_graph_uri, self._labeled_splits)

  def run_inference(self, batch: Sequence[Tuple[str, bytes]], model: _Embedding,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[Tuple[str, bytes]]:
    return model.records(batch)

  def batch_elements_kwargs(self) -> Dict[str, Any]:
    return {'min_batch_size': BATCH_IMAGES, 'max_batch_size': BATCH_IMAGES}


class Executor(base_beam_executor.BaseBeamExecutor):
  """Embeds every split of the examples named in the two split lists."""

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    transform_graph = artifact_utils.get_single_instance(input_dict[spec.TRANSFORM_GRAPH_KEY])
    features = artifact_utils.get_single_instance(output_dict[spec.FEATURES_KEY])
    settings = ModelSettings.from_custom_config(
        json.loads(exec_properties[spec.CUSTOM_CONFIG_KEY]))
    labeled = json.loads(exec_properties[spec.LABELED_SPLITS_KEY])
    clean = json.loads(exec_properties[spec.CLEAN_SPLITS_KEY])
    available = artifact_utils.decode_split_names(examples.split_names)
    missing = [split for split in labeled + clean if split not in available]
    if missing:
      raise ValueError(f'BackboneFeatures: the examples have no split {missing} '
                       f'(they hold {available})')
    features.split_names = artifact_utils.encode_split_names(labeled + clean)
    splits = labeled + clean
    start = time.perf_counter()
    with self._make_beam_pipeline() as pipeline:
      raw = [pipeline
             | f'Read[{split}]' >> beam.io.ReadFromTFRecord(
                 os.path.join(example_splits.split_dir(examples.uri, split), '*'))
             | f'Tag[{split}]' >> beam.Map(lambda record, split=split: (split, record))
             for split in splits]
      embedded = (raw | 'Flatten' >> beam.Flatten()
                  | 'Embed' >> inference.RunInference(
                      _BackboneHandler(settings, transform_graph.uri, labeled))
                  | 'BySplit' >> beam.Partition(
                      lambda record, _: splits.index(record[0]), len(splits)))
      for split, records in zip(splits, embedded):
        _ = (records
             | f'Untag[{split}]' >> beam.Map(lambda record: record[1])
             | f'Write[{split}]' >> beam.io.WriteToTFRecord(
                 os.path.join(example_splits.split_dir(features.uri, split), _FILE_PREFIX),
                 file_name_suffix='.gz'))
    seconds = time.perf_counter() - start
    views = {split: len(feature_cache.labeled_views(settings, None)) if split in labeled else 1
             for split in splits}
    counts = {split: example_splits.count_records(example_splits.split_files(features.uri, split))
              for split in splits}
    logging.info('BackboneFeatures: %s in %.1f s (%.1f image views/s).', ', '.join(
        f'{counts[split]} {split} images x {views[split]} view(s)' for split in splits),
        seconds, sum(counts[split] * views[split] for split in splits) / seconds)
