"""ImageExampleGen: TFX's FileBasedExampleGen with the image-folder executor.

This is the TFX way to add a new input format: the standard component (and so
its driver, which fingerprints the input files for caching and span tracking)
with a custom Beam executor.
"""

import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec

from components.image_example_gen import executor

# Glob of the files under each class folder, relative to a split root. The
# driver fingerprints what it matches, so added, removed or touched images
# invalidate the cache; the executor itself walks class folders recursively.
_CLASS_FILES = '*/*'


def has_fixed_split(data_dir: str) -> bool:
  """True when the data folder holds `train/` and `eval/` sub-folders."""
  return all(tf.io.gfile.isdir(os.path.join(data_dir, split))
             for split in ('train', 'eval'))


def ImageExampleGen(data_dir: str, eval_fraction: float,  # pylint: disable=invalid-name
                    fixed_split: bool) -> FileBasedExampleGen:
  """Ingests `data_dir` (`<class>/<image>`, or `train|eval/<class>/<image>`
  when `fixed_split`; decided by the caller, who can see the folder even when
  `data_dir` is the path the folder will have inside a container)."""
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
  return FileBasedExampleGen(
      input_base=data_dir,
      input_config=input_config,
      output_config=output_config,
      custom_executor_spec=executor_spec.BeamExecutorSpec(executor.Executor),
  ).with_id('ImageExampleGen')
