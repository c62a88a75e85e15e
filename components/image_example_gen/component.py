"""ImageExampleGen: TFX's FileBasedExampleGen with the image-folder executor.

This is the TFX way to add a new input format: the standard component (and so
its driver, which fingerprints the input files for caching and span tracking)
with a custom Beam executor. The driver also fingerprints the optional folder
of unlabeled images, which becomes the `unlabeled` split (UNLABELED_SPLIT,
label UNLABELED_LABEL).
"""

import os
from typing import List

import tensorflow as tf
from google.protobuf import any_pb2, struct_pb2
from tfx import v1 as tfx
from tfx.components.example_gen import driver, input_processor, utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2

from components import image_codec
from components.image_example_gen import executor

# Glob of the files under each class folder, relative to a split root. The
# driver fingerprints what it matches, so added, removed or touched images
# invalidate the cache; the executor itself walks class folders recursively.
_CLASS_FILES = '*/*'
# The split of the unlabeled folder's images, and the label they carry.
UNLABELED_SPLIT = executor.UNLABELED_SPLIT
UNLABELED_LABEL = executor.UNLABELED_LABEL


def has_fixed_split(data_dir: str) -> bool:
  """True when the data folder holds `train/` and `eval/` sub-folders."""
  return all(tf.io.gfile.isdir(os.path.join(data_dir, split))
             for split in ('train', 'eval'))


def _fingerprint(split_name: str, files: List[str]) -> str:
  """TFX's `io_utils.generate_fingerprint` of `files` (same text, so caches
  carry over), except that an entry it cannot stat (a broken symlink, a
  symlink loop) counts with its link's own size and time instead of failing
  the whole run; the executor quarantines such entries with their reason."""
  total_bytes = xor_checksum = sum_checksum = 0
  for path in files:
    try:
      stat = fileio.stat(path)
      length, mtime = stat.length, int(stat.mtime_nsec / 10**9)
    except (fileio.NotFoundError, tf.errors.OpError, OSError):
      stat = os.lstat(path)
      length, mtime = stat.st_size, int(stat.st_mtime)
    total_bytes += length
    xor_checksum ^= mtime
    sum_checksum += mtime
  return (f'split:{split_name},num_files:{len(files)},total_bytes:{total_bytes},'
          f'xor_checksum:{xor_checksum},sum_checksum:{sum_checksum}')


class _InputProcessor(input_processor.FileBasedInputProcessor):
  """Our split patterns have no span or version: span 0, no version."""

  def resolve_span_and_version(self):
    self._fingerprint = '\n'.join(
        _fingerprint(split.name,
                     fileio.glob(os.path.join(self._input_base_uri, split.pattern)))
        for split in self._splits)
    return 0, None


class _Driver(driver.FileBasedDriver):
  """The stock driver fails the run on a broken symlink in a class folder (it
  stats every file to fingerprint the input); this one fingerprints it. It
  also fingerprints every file of the unlabeled folder, which is no input
  split, so that adding, removing or touching one invalidates the cache."""

  def get_input_processor(self, splits, range_config=None, input_base_uri=None):
    assert input_base_uri
    return _InputProcessor(input_base_uri, splits, range_config)

  def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
    exec_properties = super().resolve_exec_properties(
        exec_properties, pipeline_info, component_info)
    unlabeled_dir = executor.unlabeled_dir(exec_properties)
    if unlabeled_dir:
      exec_properties[utils.FINGERPRINT_PROPERTY_NAME] += '\n' + _fingerprint(
          UNLABELED_SPLIT, executor.list_files(unlabeled_dir))
    return exec_properties


class _ImageFileBasedExampleGen(FileBasedExampleGen):
  DRIVER_CLASS = _Driver


def ImageExampleGen(data_dir: str, eval_fraction: float,  # pylint: disable=invalid-name
                    fixed_split: bool,
                    max_image_pixels: int = image_codec.DEFAULT_MAX_PIXELS,
                    unlabeled_dir: str = '') -> FileBasedExampleGen:
  """Ingests `data_dir` (`<class>/<image>`, or `train|eval/<class>/<image>`
  when `fixed_split`; decided by the caller, who can see the folder even when
  `data_dir` is the path the folder will have inside a container).

  `max_image_pixels` (`data.max_image_pixels`): images whose header declares
  more pixels are quarantined undecoded; it reaches the executor through
  `custom_config` (a packed Struct), as does `unlabeled_dir`
  (`data.unlabeled_path`): a folder of unlabeled images, any layout, ingested
  as the extra split UNLABELED_SPLIT ('' = none).
  """
  if fixed_split:
    input_config = tfx.proto.Input(splits=[
        tfx.proto.Input.Split(name=split, pattern=f'{split}/{_CLASS_FILES}')
        for split in ('train', 'eval')
    ])
    output_config = tfx.proto.Output()
  else:
    input_config = tfx.proto.Input(splits=[
        tfx.proto.Input.Split(name='all', pattern=_CLASS_FILES)])
    eval_buckets = max(1, round(100 * eval_fraction))
    output_config = tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
        tfx.proto.SplitConfig.Split(name='train', hash_buckets=100 - eval_buckets),
        tfx.proto.SplitConfig.Split(name='eval', hash_buckets=eval_buckets),
    ]))
  packed = any_pb2.Any()
  values = {'max_image_pixels': struct_pb2.Value(number_value=max_image_pixels)}
  if unlabeled_dir:     # only then, so runs without one keep their cache
    values['unlabeled_dir'] = struct_pb2.Value(string_value=unlabeled_dir)
  packed.Pack(struct_pb2.Struct(fields=values))
  return _ImageFileBasedExampleGen(
      input_base=data_dir,
      input_config=input_config,
      output_config=output_config,
      custom_config=example_gen_pb2.CustomConfig(custom_config=packed),
      custom_executor_spec=executor_spec.BeamExecutorSpec(executor.Executor),
  ).with_id('ImageExampleGen')
