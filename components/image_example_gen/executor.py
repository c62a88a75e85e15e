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

Memory stays flat in the number of images: the first read of a file judges
it and keeps only its description (label, content hash, size), which is all
the split, the conflict check and the quarantine need; the bytes are read a
second time, checked against the hash, and streamed straight into the
split's TFRecord file. TFX's own write step (`write_split.WriteSplit`) is not
used: it reshuffles the examples, which the in-process DirectRunner does by
holding every image of the data set in memory at once (7 GB at 20,000 photos
of 64 KB, docs/scale.md). A file that changed between the two reads is
quarantined, never written with a stale description.

An optional folder of unlabeled images (`unlabeled_dir` in the custom config;
any layout, every file one image) becomes one more split, `unlabeled`, whose
examples carry the placeholder label '' and a `source_path` relative to that
folder. Its files are judged like the labeled ones (no class folder needed)
and quarantined into the same `quarantine.jsonl`, under their full path.
"""

import hashlib
import json
import logging
import os
import stat as statlib
from typing import Any, Dict, Iterable, List, Tuple

import apache_beam as beam
import tensorflow as tf
from google.protobuf import struct_pb2
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components import contracts
from components.contracts import (IMAGE_FEATURE, IMAGE_ID_FEATURE, LABEL_CONFLICTS_FILE,
                                  LABEL_FEATURE, QUARANTINE_FILE, SOURCE_PATH_FEATURE,
                                  UNLABELED_LABEL, UNLABELED_SPLIT)
from components.image_example_gen import spec
from models import image_codec

# `data.max_file_bytes`: larger files are quarantined without being read.
DEFAULT_MAX_FILE_BYTES = 64 * 2**20
_SPECIAL_FILES = {statlib.S_IFIFO: 'fifo', statlib.S_IFSOCK: 'socket',
                  statlib.S_IFCHR: 'character device', statlib.S_IFBLK: 'block device'}
_OK = 'ok'
_QUARANTINED = 'quarantined'
# Fields of a read image's description that are not features of its example.
_PATH = 'path'
_SHOWN = 'shown'
# Each split's TFRecord files, as TFX's own ExampleGens name them.
_SPLIT_FILE_PREFIX = 'data_tfrecord'


def list_files(split_root: str) -> List[str]:
  """Every entry below `split_root` that ingest must account for, sorted.

  Hidden files and folders are included (and later quarantined). On a local
  file system symlinks are handled so that nothing hangs, repeats or vanishes:

  * a symlink to a file is listed like a file (read through the link; its
    label is the class folder the link is in). A broken one, or a loop of
    file symlinks, is listed too and quarantined as 'broken symlink'.
  * the real folders under the root are walked first, without following
    links; then each symlink to a folder, in sorted order, is followed only
    if its target neither is, lies inside nor contains a folder already
    read. Otherwise (a loop back to an ancestor, a second path to folders
    already read) the link itself is listed as one entry and quarantined as
    'symlink to a folder already read', so a file reachable twice is ingested
    once, always through its path without folder symlinks when it has one.

  "Count in" is therefore precisely: the non-directory entries of the tree
  (files, file symlinks, broken symlinks, sockets...) walked through real
  folders and followed folder symlinks, plus one per folder symlink not
  followed. Every entry becomes exactly one example or one quarantine line,
  so ingested + quarantined == len(list_files(root)) (asserted against an
  independent count by tests/test_hostile_ingest.py).
  Object stores (paths with '://') have no symlinks: plain recursive listing.
  """
  if contracts.is_remote(split_root):
    paths = []
    for directory, _, files in tf.io.gfile.walk(split_root):
      paths.extend(os.path.join(directory, name) for name in files)
    return sorted(paths)
  if not os.path.isdir(split_root):
    return []
  paths, read, links = [], [], []   # read: real paths of the folders walked

  def walk(top: str) -> None:
    stack = [top]
    while stack:
      directory = stack.pop()
      read.append(os.path.realpath(directory))
      try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
      except OSError:
        paths.append(directory)   # unreadable folder: quarantined with reason
        continue
      for entry in entries:
        path = os.path.join(directory, entry.name)
        if entry.is_dir(follow_symlinks=False):
          stack.append(path)
        elif entry.is_symlink() and os.path.isdir(path):
          links.append(path)
        else:
          paths.append(path)

  def overlaps(real: str) -> bool:
    return any(real == seen or real.startswith(seen + os.sep) or
               seen.startswith(real + os.sep) for seen in read)

  walk(split_root)
  while links:
    links.sort()
    link = links.pop(0)
    if overlaps(os.path.realpath(link)):
      paths.append(link)
    else:
      walk(link)
  return sorted(paths)


def stat(path: str) -> Tuple[int, int, int]:
  """(size, mtime in ns, mode) of what ingest reads at `path`: the target of a
  symlink, or the link itself when it is broken or a loop. Never opens the
  file, so a FIFO cannot block. Read by the executor and the driver."""
  if contracts.is_remote(path):
    info = tf.io.gfile.stat(path)
    return info.length, info.mtime_nsec, statlib.S_IFREG
  try:
    info = os.stat(path)
  except OSError:
    info = os.lstat(path)
  return info.st_size, info.st_mtime_ns, info.st_mode


def shown_path(path: str) -> str:
  """`path` as valid UTF-8 text: the bytes of a name that is not UTF-8 (kept
  by os.fsdecode as surrogates) are written `\\xNN`."""
  return path.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')


def split_root(input_base: str, pattern: str) -> str:
  """The folder a split pattern like `train/*/*` or `*/*` is rooted at."""
  return os.path.normpath(os.path.join(input_base, pattern.split('*')[0]))


def _custom_config(exec_properties: Dict[str, Any], key: str, default: Any) -> Any:
  """One value of the component's custom_config (a packed Struct), or `default`.

  Read by both the executor and the driver (component.py)."""
  raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
  if raw:
    custom = proto_utils.json_to_proto(raw, example_gen_pb2.CustomConfig())
    values = struct_pb2.Struct()
    if custom.custom_config.Unpack(values) and key in values:
      return values[key]
  return default


def max_image_pixels(exec_properties: Dict[str, Any]) -> int:
  return int(_custom_config(exec_properties, spec.MAX_IMAGE_PIXELS_KEY,
                            image_codec.DEFAULT_MAX_PIXELS))


def max_file_bytes(exec_properties: Dict[str, Any]) -> int:
  return int(_custom_config(exec_properties, spec.MAX_FILE_BYTES_KEY,
                            DEFAULT_MAX_FILE_BYTES))


def follow_external_symlinks(exec_properties: Dict[str, Any]) -> bool:
  return bool(_custom_config(exec_properties, spec.FOLLOW_EXTERNAL_SYMLINKS_KEY, True))


def unlabeled_dir(exec_properties: Dict[str, Any]) -> str:
  """The folder of unlabeled images, '' when there is none."""
  return _custom_config(exec_properties, spec.UNLABELED_DIR_KEY, '')


class _ReadImage(beam.DoFn):
  """Reads one file; emits the example's fields or a quarantine record.

  Only a regular file of at most `max_file_bytes` is opened (a FIFO would
  block the run, a device or a huge file fill the memory); unless
  `follow_external_symlinks`, only one that resolves inside `input_base`.
  Paths arrive as bytes (os.fsencode), so a name that is not UTF-8 reaches
  the check that quarantines it. The image is judged with the transform
  graph's own functions, in one call (`image_codec.ingest_check`): the
  header size guard (against `max_image_pixels`) before anything is decoded,
  then a decode (a JPEG at 1/8 scale), whose upright shape is recorded as
  height and width.

  Labeled files take their label from their class folder and are named
  relative to `input_base`; unlabeled ones (`labeled=False`, `input_base` is
  then their folder) need no class folder, carry UNLABELED_LABEL, and are
  quarantined under their full path, so the list tells them apart.

  What is emitted describes the image without its bytes (`_WriteExample`
  reads them again): the file's path to read, and as `shown` the path its
  quarantine line would name.
  """

  def __init__(self, input_base: str, split_root: str,
               max_pixels: int = image_codec.DEFAULT_MAX_PIXELS,
               max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
               follow_external_symlinks: bool = True,
               labeled: bool = True):
    self._input_base = input_base
    self._split_root = split_root
    self._max_pixels = max_pixels
    self._max_file_bytes = max_file_bytes
    self._follow_external_symlinks = follow_external_symlinks
    self._labeled = labeled
    self._check = None

  def setup(self):
    self._check = tf.function(
        lambda encoded: image_codec.ingest_check(encoded, self._max_pixels),
        input_signature=[tf.TensorSpec([], tf.string)], autograph=False)

  def _reason(self, path: str, parts: List[str]):
    """(reason, None) to quarantine, or (None, record fields) to ingest."""
    if shown_path(path) != path:
      return 'file name is not valid UTF-8', None
    if self._labeled and len(parts) < 2:
      return 'not inside a class folder', None
    if any(part.startswith('.') for part in parts):
      return 'hidden file or folder', None
    if os.path.islink(path) and not os.path.exists(path):
      return 'broken symlink (missing target, or a loop of symlinks)', None
    if os.path.isdir(path):
      if os.path.islink(path):
        return ('symlink to a folder already read (a loop, or a second path '
                'to the same images): not followed'), None
      return 'unreadable folder', None
    if not self._follow_external_symlinks and not contracts.is_remote(path):
      base = os.path.realpath(self._input_base)
      if os.path.commonpath([os.path.realpath(path), base]) != base:
        return ('symlink to outside the data folder, not followed '
                '(data.follow_external_symlinks is false)'), None
    size, _, mode = stat(path)
    if not statlib.S_ISREG(mode):
      kind = _SPECIAL_FILES.get(statlib.S_IFMT(mode), 'unknown kind')
      return f'not a regular file ({kind}); not opened', None
    if size > self._max_file_bytes:
      return (f'too large: {size} bytes, more than '
              f'data.max_file_bytes={self._max_file_bytes}; not read'), None
    try:
      with tf.io.gfile.GFile(path, 'rb') as f:
        encoded = f.read()
    except (OSError, tf.errors.OpError) as error:
      return f'unreadable: {image_codec.error_text(error)}', None
    if not encoded:
      return 'empty file', None
    image_format = image_codec.sniff_format(encoded)
    if image_format is None:
      return ('not a supported image format (supported: '
              f'{", ".join(image_codec.SUPPORTED_FORMATS)})'
              f'{image_codec.conversion_hint(encoded)}'), None
    try:
      declared, decoded = self._check(tf.constant(encoded))
      height, width, frames = declared.numpy()
      pixels = int(height) * int(width) * int(frames)
      if pixels > self._max_pixels:
        return (f'too large: the {image_format} header declares {width}x{height} '
                f'pixels x {frames} frame(s) = {pixels} pixels, more than '
                f'max_image_pixels={self._max_pixels}; not decoded'), None
      height, width = decoded.numpy()
    except (tf.errors.InvalidArgumentError, ValueError) as error:
      return f'undecodable {image_format}: {image_codec.error_text(error)}', None
    return None, (encoded, image_format, int(height), int(width))

  def process(self, path: bytes) -> Iterable[Any]:
    if self._check is None:
      self.setup()
    path = os.fsdecode(path)
    source_path = os.path.relpath(path, self._input_base)
    parts = os.path.relpath(path, self._split_root).split(os.sep)
    reason, fields = self._reason(path, parts)
    shown = shown_path(source_path if self._labeled else path)
    if reason is not None:
      yield _quarantine(shown, reason)
      return
    encoded, image_format, height, width = fields
    yield {
        _PATH: path,
        _SHOWN: shown,
        LABEL_FEATURE: parts[0] if self._labeled else UNLABELED_LABEL,
        IMAGE_ID_FEATURE: hashlib.sha256(encoded).hexdigest(),
        SOURCE_PATH_FEATURE: source_path,
        'height': height,
        'width': width,
        'format': image_format,
    }


def _quarantine(shown: str, reason: str) -> beam.pvalue.TaggedOutput:
  logging.warning('Quarantined %s: %s', shown, reason)
  return beam.pvalue.TaggedOutput(_QUARANTINED, {'path': shown, 'reason': reason})


def _to_example(record: Dict[str, Any]) -> tf.train.Example:
  def feature(value):
    if isinstance(value, int):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    if isinstance(value, str):
      value = value.encode('utf-8')
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  return tf.train.Example(features=tf.train.Features(
      feature={name: feature(value) for name, value in record.items()}))


def _changed(record: Dict[str, Any], how: str) -> beam.pvalue.TaggedOutput:
  return _quarantine(record[_SHOWN], f'changed while being ingested: {how}; run again')


class _WriteExample(beam.DoFn):
  """Reads an image described by `_ReadImage` a second time and emits its
  serialized tf.Example, or quarantines it when its bytes no longer hash to
  the `image_id` the split and the conflict check were decided on."""

  def process(self, record: Dict[str, Any]) -> Iterable[Any]:
    try:
      with tf.io.gfile.GFile(record[_PATH], 'rb') as f:
        encoded = f.read()
    except (OSError, tf.errors.OpError) as error:
      yield _changed(record, 'unreadable on the second read '
                     f'({image_codec.error_text(error)})')
      return
    if hashlib.sha256(encoded).hexdigest() != record[IMAGE_ID_FEATURE]:
      yield _changed(record, 'its content differs between the first and the '
                     'second read')
      return
    fields = {name: value for name, value in record.items()
              if name not in (_PATH, _SHOWN)}
    yield _to_example({IMAGE_FEATURE: encoded, **fields}).SerializeToString()


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
  for index, upper in enumerate(boundaries[record[LABEL_FEATURE]]):
    if record[IMAGE_ID_FEATURE] <= upper:
      return index
  return num_splits - 1


@beam.ptransform_fn
def _StratifiedSplit(records: beam.PCollection,
                     weights: List[int]) -> List[beam.PCollection]:
  """Stratified per class, deterministic, keyed on the content hash."""
  boundaries = (
      records
      | 'LabelAndId' >> beam.Map(lambda r: (r[LABEL_FEATURE], r[IMAGE_ID_FEATURE]))
      | 'GroupByClass' >> beam.GroupByKey()
      | 'Boundaries' >> beam.Map(_class_boundaries, weights))
  return records | 'Partition' >> beam.Partition(
      _split_index, len(weights), boundaries=beam.pvalue.AsDict(boundaries))


def _id_label_path(record: Dict[str, Any]) -> Tuple[str, Tuple[str, str]]:
  return record[IMAGE_ID_FEATURE], (record[LABEL_FEATURE], record[SOURCE_PATH_FEATURE])


def _label_conflict(
    id_and_entries: Tuple[str, Iterable[Tuple[str, str]]]) -> Iterable[Dict[str, Any]]:
  """The image `image_id` if its copies carry more than one label."""
  image_id, entries = id_and_entries
  entries = sorted(entries, key=lambda entry: (entry[1], entry[0]))
  labels = sorted({label for label, _ in entries})
  if len(labels) > 1:
    yield {IMAGE_ID_FEATURE: image_id, 'labels': labels,
           'paths': [path for _, path in entries]}


def _read_folder(pipeline: beam.Pipeline, name: str, root: str,
                 read_image: _ReadImage) -> Tuple[List[str], Any]:
  """(the files listed under `root`, the ParDo's tagged outputs)."""
  paths = list_files(root)
  logging.info('Split %r: %d file(s) under %s', name, len(paths), root)
  return paths, (
      pipeline
      | f'ListFiles[{name}]' >> beam.Create([os.fsencode(path) for path in paths])
      | f'Reshuffle[{name}]' >> beam.Reshuffle()
      | f'ReadImages[{name}]' >> beam.ParDo(read_image).with_outputs(
          _QUARANTINED, main=_OK))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
  """ExampleGen executor for a folder of images, one sub-folder per class,
  plus an optional folder of unlabeled images."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    raise NotImplementedError('GenerateExamplesByBeam is overridden instead.')

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    """The base executor's Do, with each split written without its reshuffle
    (see the module docstring), then the quarantine and conflict counts."""
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EXAMPLES_KEY])
    self._quarantine_path = os.path.join(examples.uri, QUARANTINE_FILE)
    self._label_conflicts_path = os.path.join(examples.uri, LABEL_CONFLICTS_FILE)
    self._examples = examples
    self._unlabeled_paths = None     # listed by GenerateExamplesByBeam
    with self._make_beam_pipeline() as pipeline:
      splits = self.GenerateExamplesByBeam(pipeline, exec_properties)
      for name, serialized in splits.items():
        _ = serialized | f'WriteSplit[{name}]' >> beam.io.WriteToTFRecord(
            os.path.join(artifact_utils.get_split_uri([examples], name),
                         _SPLIT_FILE_PREFIX),
            file_name_suffix='.gz')
    payload_format = exec_properties.get(
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
    if payload_format:
      examples_utils.set_payload_format(examples, payload_format)
    file_format = exec_properties.get(
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY)
    if file_format:
      examples_utils.set_file_format(
          examples, write_split.to_file_format_str(file_format))

    with tf.io.gfile.GFile(self._label_conflicts_path) as f:
      conflicts = sum(1 for line in f if line.strip())
    examples.set_int_custom_property(contracts.LABEL_CONFLICT_COUNT_PROPERTY, conflicts)
    if conflicts:
      logging.warning('%d image(s) appear under more than one label; see %s',
                      conflicts, self._label_conflicts_path)
    with tf.io.gfile.GFile(self._quarantine_path) as f:
      quarantine = [json.loads(line) for line in f if line.strip()]
    examples.set_int_custom_property(contracts.QUARANTINED_COUNT_PROPERTY, len(quarantine))
    if quarantine:
      logging.warning('%d file(s) were quarantined; reasons in %s', len(quarantine),
                      self._quarantine_path)
    if self._unlabeled_paths is not None:
      # Every listed file is an example or a quarantine line (under its path).
      unlabeled = len(self._unlabeled_paths) - sum(
          row['path'] in self._unlabeled_paths for row in quarantine)
      examples.set_int_custom_property(contracts.UNLABELED_COUNT_PROPERTY, unlabeled)
      logging.info('%d unlabeled image(s) in split %r', unlabeled, UNLABELED_SPLIT)

  def GenerateExamplesByBeam(
      self, pipeline: beam.Pipeline,
      exec_properties: Dict[str, Any]) -> Dict[str, beam.PCollection]:
    """{split name: serialized tf.Examples}; names the artifact's splits and
    writes the quarantine list and the label conflicts."""
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    input_config = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
        example_gen_pb2.Input())
    output_config = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
        example_gen_pb2.Output())
    split_names = example_gen_utils.generate_output_split_names(
        input_config, output_config)

    limits = {'max_pixels': max_image_pixels(exec_properties),
              'max_file_bytes': max_file_bytes(exec_properties),
              'follow_external_symlinks': follow_external_symlinks(exec_properties)}
    read_splits, quarantines = [], []
    for split in input_config.splits:
      root = split_root(input_base, split.pattern)
      _, outputs = _read_folder(pipeline, split.name, root,
                                _ReadImage(input_base, root, **limits))
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
    records = dict(zip(split_names, record_splits))

    unlabeled_root = unlabeled_dir(exec_properties)
    if unlabeled_root:
      paths, outputs = _read_folder(
          pipeline, UNLABELED_SPLIT, unlabeled_root,
          _ReadImage(unlabeled_root, unlabeled_root, labeled=False, **limits))
      self._unlabeled_paths = {shown_path(path) for path in paths}
      split_names = split_names + [UNLABELED_SPLIT]
      quarantines.append(outputs[_QUARANTINED])
      records[UNLABELED_SPLIT] = outputs[_OK]
    self._examples.split_names = artifact_utils.encode_split_names(split_names)

    examples = {}
    for name, split in records.items():
      written = split | f'ToExample[{name}]' >> beam.ParDo(
          _WriteExample()).with_outputs(_QUARANTINED, main=_OK)
      examples[name] = written[_OK]
      quarantines.append(written[_QUARANTINED])

    (quarantines
     | 'MergeQuarantine' >> beam.Flatten()
     | 'QuarantineToJson' >> beam.Map(json.dumps, sort_keys=True)
     | 'WriteQuarantine' >> beam.io.WriteToText(
         self._quarantine_path, num_shards=1, shard_name_template=''))

    # The same image (content hash) under two labels, over the labeled splits:
    # only (id, label, path) triples are grouped, never image bytes.
    (read_splits
     | 'MergeReadImages' >> beam.Flatten()
     | 'IdLabelPath' >> beam.Map(_id_label_path)
     | 'GroupById' >> beam.GroupByKey()
     | 'LabelConflicts' >> beam.FlatMap(_label_conflict)
     | 'LabelConflictToJson' >> beam.Map(json.dumps, sort_keys=True)
     | 'WriteLabelConflicts' >> beam.io.WriteToText(
         self._label_conflicts_path, num_shards=1, shard_name_template=''))
    return examples
