"""Beam executor that turns a labeled image folder into tf.Examples.

Layout read: `<split root>/<class name>/...<image file>`; the class is the first
folder below the split root, so nested sub-folders are fine. Every file under
the root ends up in exactly one place: an example of some split, or a line of
`quarantine.jsonl` next to the splits saying why it was not ingested.

Splitting (when the input is one folder and the output config asks for splits)
is stratified per class and keyed on the image's content hash: each class is
spread over the splits in proportion to their hash buckets, every split gets
at least one image of every class that has enough images, the assignment is
the same on every run, and identical images always land in the same split.
"""

import hashlib
import json
import logging
import os
from typing import Any, Dict, Iterable, List, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen import utils as example_gen_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components import image_codec

QUARANTINE_FILE = 'quarantine.jsonl'
QUARANTINED_COUNT_PROPERTY = 'quarantined_count'
_OK = 'ok'
_QUARANTINED = 'quarantined'


def list_files(split_root: str) -> List[str]:
  """Every regular file below `split_root`, sorted, hidden ones included."""
  paths = []
  for directory, _, files in tf.io.gfile.walk(split_root):
    paths.extend(os.path.join(directory, name) for name in files)
  return sorted(paths)


def _split_root(input_base: str, pattern: str) -> str:
  """The folder a split pattern like `train/*/*` or `*/*` is rooted at."""
  return os.path.normpath(os.path.join(input_base, pattern.split('*')[0]))


class _ReadImage(beam.DoFn):
  """Reads one file; emits the example's fields or a quarantine record."""

  def __init__(self, input_base: str, split_root: str):
    self._input_base = input_base
    self._split_root = split_root

  def process(self, path: str) -> Iterable[Any]:
    source_path = os.path.relpath(path, self._input_base)
    parts = os.path.relpath(path, self._split_root).split(os.sep)
    reason = None
    if len(parts) < 2:
      reason = 'not inside a class folder'
    elif any(part.startswith('.') for part in parts):
      reason = 'hidden file or folder'
    if reason is None:
      try:
        with tf.io.gfile.GFile(path, 'rb') as f:
          encoded = f.read()
      except (OSError, tf.errors.OpError) as error:
        reason = f'unreadable: {error}'
    if reason is None:
      image_format = image_codec.sniff_format(encoded)
      if not encoded:
        reason = 'empty file'
      elif image_format is None:
        reason = ('not a supported image format (supported: '
                  f'{", ".join(image_codec.SUPPORTED_FORMATS)})')
    if reason is None:
      try:
        height, width, _ = image_codec.decode_rgb(tf.constant(encoded)).shape
      except (tf.errors.InvalidArgumentError, ValueError) as error:
        reason = f'undecodable {image_format}: {getattr(error, "message", error)}'
    if reason is not None:
      logging.warning('Quarantined %s: %s', source_path, reason)
      yield beam.pvalue.TaggedOutput(
          _QUARANTINED, {'path': source_path, 'reason': reason})
      return
    yield {
        'image': encoded,
        'label': parts[0],
        'image_id': hashlib.sha256(encoded).hexdigest(),
        'source_path': source_path,
        'height': int(height),
        'width': int(width),
        'format': image_format,
    }


def _to_example(record: Dict[str, Any]) -> tf.train.Example:
  def feature(value):
    if isinstance(value, int):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    if isinstance(value, str):
      value = value.encode('utf-8')
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  return tf.train.Example(features=tf.train.Features(
      feature={name: feature(value) for name, value in record.items()}))


def _allocate(count: int, weights: List[int]) -> List[int]:
  """Splits `count` items over splits in proportion to `weights`.

  Largest remainder, then every split gets at least one item while the
  count allows it (taken from the largest share).
  """
  total = sum(weights)
  exact = [count * w / total for w in weights]
  shares = [int(x) for x in exact]
  by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i],
                        reverse=True)
  for i in by_remainder[:count - sum(shares)]:
    shares[i] += 1
  if count >= len(weights):
    for i, share in enumerate(shares):
      if share == 0:
        shares[max(range(len(shares)), key=shares.__getitem__)] -= 1
        shares[i] = 1
  return shares


def _class_boundaries(
    label_and_ids: Tuple[str, Iterable[str]],
    weights: List[int]) -> Tuple[str, List[str]]:
  """For one class: the largest image id that falls into each split."""
  label, ids = label_and_ids
  unique_ids = sorted(set(ids))
  shares = _allocate(len(unique_ids), weights)
  if len(unique_ids) < len(weights):
    logging.warning('Class %r has %d distinct image(s): too few to appear in '
                    'all %d splits.', label, len(unique_ids), len(weights))
  boundaries, end = [], 0
  for share in shares:
    end += share
    boundaries.append(unique_ids[end - 1] if end else '')
  return label, boundaries


def _split_index(record: Dict[str, Any], num_splits: int,
                 boundaries: Dict[str, List[str]]) -> int:
  for index, upper in enumerate(boundaries[record['label']]):
    if record['image_id'] <= upper:
      return index
  return num_splits - 1


@beam.ptransform_fn
def _StratifiedSplit(records: beam.PCollection,
                     weights: List[int]) -> List[beam.PCollection]:
  """Stratified per class, deterministic, keyed on the content hash."""
  boundaries = (
      records
      | 'LabelAndId' >> beam.Map(lambda r: (r['label'], r['image_id']))
      | 'GroupByClass' >> beam.GroupByKey()
      | 'Boundaries' >> beam.Map(_class_boundaries, weights))
  return records | 'Partition' >> beam.Partition(
      _split_index, len(weights), boundaries=beam.pvalue.AsDict(boundaries))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
  """ExampleGen executor for a folder of images, one sub-folder per class."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    raise NotImplementedError('GenerateExamplesByBeam is overridden instead.')

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    examples = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EXAMPLES_KEY])
    self._quarantine_path = os.path.join(examples.uri, QUARANTINE_FILE)
    super().Do(input_dict, output_dict, exec_properties)
    with tf.io.gfile.GFile(self._quarantine_path) as f:
      quarantined = sum(1 for line in f if line.strip())
    examples.set_int_custom_property(QUARANTINED_COUNT_PROPERTY, quarantined)
    if quarantined:
      logging.warning('%d file(s) were quarantined; reasons in %s', quarantined,
                      self._quarantine_path)

  def GenerateExamplesByBeam(
      self, pipeline: beam.Pipeline,
      exec_properties: Dict[str, Any]) -> Dict[str, beam.PCollection]:
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    input_config = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
        example_gen_pb2.Input())
    output_config = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
        example_gen_pb2.Output())
    split_names = example_gen_utils.generate_output_split_names(
        input_config, output_config)

    read_splits, quarantines = [], []
    for split in input_config.splits:
      root = _split_root(input_base, split.pattern)
      paths = list_files(root)
      logging.info('Split pattern %r: %d file(s) under %s', split.pattern,
                   len(paths), root)
      outputs = (
          pipeline
          | f'ListFiles[{split.name}]' >> beam.Create(paths)
          | f'Reshuffle[{split.name}]' >> beam.Reshuffle()
          | f'ReadImages[{split.name}]' >> beam.ParDo(
              _ReadImage(input_base, root)).with_outputs(_QUARANTINED, main=_OK))
      read_splits.append(outputs[_OK])
      quarantines.append(outputs[_QUARANTINED])

    if output_config.split_config.splits:
      if len(read_splits) != 1:
        raise ValueError('An output split_config needs exactly one input split.')
      weights = [s.hash_buckets for s in output_config.split_config.splits]
      record_splits = read_splits[0] | 'StratifiedSplit' >> _StratifiedSplit(
          weights)
    else:
      record_splits = read_splits

    (quarantines
     | 'MergeQuarantine' >> beam.Flatten()
     | 'QuarantineToJson' >> beam.Map(json.dumps, sort_keys=True)
     | 'WriteQuarantine' >> beam.io.WriteToText(
         self._quarantine_path, num_shards=1, shard_name_template=''))

    return {
        name: records | f'ToExample[{name}]' >> beam.Map(_to_example)
        for name, records in zip(split_names, record_splits)
    }
