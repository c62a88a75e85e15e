"""ImageExampleGen: TFX's FileBasedExampleGen with the image-folder executor.

This is the TFX way to add a new input format: the standard component (and so
its driver, which fingerprints the input files for caching and span tracking)
with a custom Beam executor.
"""

import os

import tensorflow as tf
from google.protobuf import any_pb2, struct_pb2
from tfx import v1 as tfx
from tfx.components.example_gen import driver, input_processor
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


def has_fixed_split(data_dir: str) -> bool:
  """True when the data folder holds `train/` and `eval/` sub-folders."""
  return all(tf.io.gfile.isdir(os.path.join(data_dir, split))
             for split in ('train', 'eval'))


def _fingerprint(split_name: str, pattern: str) -> str:
  """TFX's `io_utils.generate_fingerprint` (same text, so caches carry over),
  except that an entry it cannot stat (a broken symlink, a symlink loop) counts
  with its link's own size and time instead of failing the whole run; the
  executor quarantines such entries with their reason."""
  files = fileio.glob(pattern)
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
        _fingerprint(split.name, os.path.join(self._input_base_uri, split.pattern))
        for split in self._splits)
    return 0, None


class _Driver(driver.FileBasedDriver):
  """The stock driver fails the run on a broken symlink in a class folder (it
  stats every file to fingerprint the input); this one fingerprints it."""

  def get_input_processor(self, splits, range_config=None, input_base_uri=None):
    assert input_base_uri
    return _InputProcessor(input_base_uri, splits, range_config)


class _ImageFileBasedExampleGen(FileBasedExampleGen):
  DRIVER_CLASS = _Driver


def ImageExampleGen(data_dir: str, eval_fraction: float,  # pylint: disable=invalid-name
                    fixed_split: bool,
                    max_image_pixels: int = image_codec.DEFAULT_MAX_PIXELS,
                    ) -> FileBasedExampleGen:
  """Ingests `data_dir` (`<class>/<image>`, or `train|eval/<class>/<image>`
  when `fixed_split`; decided by the caller, who can see the folder even when
  `data_dir` is the path the folder will have inside a container).

  `max_image_pixels` (`data.max_image_pixels`): images whose header declares
  more pixels are quarantined undecoded; it reaches the executor through
  `custom_config` (a packed Struct).
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
  packed.Pack(struct_pb2.Struct(fields={
      'max_image_pixels': struct_pb2.Value(number_value=max_image_pixels)}))
  return _ImageFileBasedExampleGen(
      input_base=data_dir,
      input_config=input_config,
      output_config=output_config,
      custom_config=example_gen_pb2.CustomConfig(custom_config=packed),
      custom_executor_spec=executor_spec.BeamExecutorSpec(executor.Executor),
  ).with_id('ImageExampleGen')
