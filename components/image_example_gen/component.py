"""ImageExampleGen: TFX's FileBasedExampleGen with the image-folder executor.

This is the TFX way to add a new input format: the standard component (and so
its driver, which fingerprints the input files for caching and span tracking)
with a custom Beam executor. The driver also fingerprints the optional folder
of unlabeled images, which becomes the `unlabeled` split (UNLABELED_SPLIT,
label UNLABELED_LABEL).
"""

import hashlib
import os

import tensorflow as tf
from google.protobuf import any_pb2, struct_pb2
from tfx import v1 as tfx
from tfx.components.example_gen import driver, input_processor, utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.contracts import EVAL_SPLIT, TRAIN_SPLIT, UNLABELED_SPLIT
from components.image_example_gen import executor
from components.image_example_gen import spec
from models import image_codec

# The files under each class folder, relative to a split root. Only the part
# before the first '*' counts (executor.split_root): the driver and the
# executor both list the whole tree below it (executor.list_files).
_CLASS_FILES = '*/*'


def has_fixed_split(data_dir: str) -> bool:
  """True when the data folder holds `train/` and `eval/` sub-folders."""
  return all(tf.io.gfile.isdir(os.path.join(data_dir, split))
             for split in (TRAIN_SPLIT, EVAL_SPLIT))


def _fingerprint(split_name: str, root: str) -> str:
  """The entries ingest reads under `root` (executor.list_files, at any
  depth): their count, total size and a hash of every (path relative to
  `root`, size, mtime in ns). Adding, removing, touching or moving a file,
  even within the same second or from one class folder to another (a
  relabel), changes it. Entries are stat'ed, never opened (a FIFO cannot
  block it); a broken symlink counts with the link's own size and time."""
  paths = executor.list_files(root)
  digest, total_bytes = hashlib.sha256(), 0
  for path in paths:
    size, mtime_ns, _ = executor.stat(path)
    total_bytes += size
    digest.update(b'%s\0%d\0%d\n' % (os.fsencode(os.path.relpath(path, root)),
                                      size, mtime_ns))
  return (f'split:{split_name},num_files:{len(paths)},total_bytes:{total_bytes},'
          f'sha256:{digest.hexdigest()}')


class _InputProcessor(input_processor.FileBasedInputProcessor):
  """Our split patterns have no span or version: span 0, no version."""

  def resolve_span_and_version(self):
    self._fingerprint = '\n'.join(
        _fingerprint(split.name,
                     executor.split_root(self._input_base_uri, split.pattern))
        for split in self._splits)
    return 0, None


class _Driver(driver.FileBasedDriver):
  """The stock driver globs the class folders' top level only, fingerprints
  no file name, and fails the run on a broken symlink; this one fingerprints
  every entry the executor reads, by name (see `_fingerprint`). It also
  fingerprints the unlabeled folder, which is no input split."""

  def get_input_processor(self, splits, range_config=None, input_base_uri=None):
    assert input_base_uri
    return _InputProcessor(input_base_uri, splits, range_config)

  def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
    exec_properties = super().resolve_exec_properties(
        exec_properties, pipeline_info, component_info)
    unlabeled_dir = executor.unlabeled_dir(exec_properties)
    if unlabeled_dir:
      exec_properties[utils.FINGERPRINT_PROPERTY_NAME] += '\n' + _fingerprint(
          UNLABELED_SPLIT, unlabeled_dir)
    return exec_properties


class _ImageFileBasedExampleGen(FileBasedExampleGen):
  DRIVER_CLASS = _Driver


def ImageExampleGen(data_dir: str, eval_fraction: float,  # pylint: disable=invalid-name
                    fixed_split: bool,
                    max_image_pixels: int = image_codec.DEFAULT_MAX_PIXELS,
                    unlabeled_dir: str = '',
                    max_file_bytes: int = executor.DEFAULT_MAX_FILE_BYTES,
                    follow_external_symlinks: bool = True) -> FileBasedExampleGen:
  """Ingests `data_dir` (`<class>/<image>`, or `train|eval/<class>/<image>`
  when `fixed_split`; decided by the caller, who can see the folder even when
  `data_dir` is the path the folder will have inside a container).

  `max_image_pixels` (`data.max_image_pixels`): images whose header declares
  more pixels are quarantined undecoded; it reaches the executor through
  `custom_config` (a packed Struct), as does `unlabeled_dir`
  (`data.unlabeled_path`): a folder of unlabeled images, any layout, ingested
  as the extra split UNLABELED_SPLIT ('' = none), `max_file_bytes`
  (`data.max_file_bytes`): larger files are quarantined unread, and
  `follow_external_symlinks` (`data.follow_external_symlinks`): when false,
  files that resolve outside their data folder are quarantined.
  """
  if fixed_split:
    input_config = tfx.proto.Input(splits=[
        tfx.proto.Input.Split(name=split, pattern=f'{split}/{_CLASS_FILES}')
        for split in (TRAIN_SPLIT, EVAL_SPLIT)
    ])
    output_config = tfx.proto.Output()
  else:
    input_config = tfx.proto.Input(splits=[
        tfx.proto.Input.Split(name='all', pattern=_CLASS_FILES)])
    eval_buckets = max(1, round(100 * eval_fraction))
    output_config = tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
        tfx.proto.SplitConfig.Split(name=TRAIN_SPLIT, hash_buckets=100 - eval_buckets),
        tfx.proto.SplitConfig.Split(name=EVAL_SPLIT, hash_buckets=eval_buckets),
    ]))
  packed = any_pb2.Any()
  values = {
      spec.MAX_IMAGE_PIXELS_KEY: struct_pb2.Value(number_value=max_image_pixels),
      spec.MAX_FILE_BYTES_KEY: struct_pb2.Value(number_value=max_file_bytes),
      spec.FOLLOW_EXTERNAL_SYMLINKS_KEY: struct_pb2.Value(
          bool_value=follow_external_symlinks),
  }
  if unlabeled_dir:     # only then, so runs without one keep their cache
    values[spec.UNLABELED_DIR_KEY] = struct_pb2.Value(string_value=unlabeled_dir)
  packed.Pack(struct_pb2.Struct(fields=values))
  return _ImageFileBasedExampleGen(
      input_base=data_dir,
      input_config=input_config,
      output_config=output_config,
      custom_config=example_gen_pb2.CustomConfig(custom_config=packed),
      custom_executor_spec=executor_spec.BeamExecutorSpec(executor.Executor),
  ).with_id('ImageExampleGen')
