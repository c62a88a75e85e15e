"""ImageExampleGen's executor alone, TFX style: the execution properties the
component builds, an Examples artifact in a temp dir, `Executor().Do` on
Beam's DirectRunner, and what it wrote; no pipeline, no MLMD
(tests/test_image_example_gen.py runs the component with LocalDagRunner)."""

import json
import os

from google.protobuf import message
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components import contracts
from components import example_splits
from components.image_example_gen import component
from components.image_example_gen import executor
from components.image_example_gen import spec

from helpers import artifact, copy_sample, sample_bytes

CLASSES = ['bag', 'trouser']
PER_CLASS = 5


def _exec_properties(example_gen):
  """The component's execution properties as a launcher passes them (protos as JSON)."""
  return {key: proto_utils.proto_to_json(value) if isinstance(value, message.Message)
          else value for key, value in example_gen.exec_properties.items()}


def _run(data_dir, output_uri, **kwargs):
  examples = artifact(standard_artifacts.Examples, output_uri)
  example_gen = component.ImageExampleGen(data_dir, 0.2, fixed_split=False, **kwargs)
  executor.Executor().Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]},
                         _exec_properties(example_gen))
  return examples


def _source_paths(examples, split):
  return [path.decode() for batch in example_splits.string_values(
      examples.uri, split, 'source_path') for path in batch]


def _labels(examples, split):
  return [label.decode() for batch in example_splits.string_values(
      examples.uri, split, contracts.LABEL_FEATURE) for label in batch]


def test_a_broken_file_is_quarantined_and_the_rest_split_by_class(tmp_path):
  data_dir = copy_sample(str(tmp_path / 'images'), CLASSES, PER_CLASS)
  with open(os.path.join(data_dir, 'bag', 'broken.png'), 'wb') as f:
    f.write(sample_bytes('bag', 0)[:60])
  examples = _run(data_dir, str(tmp_path / 'examples'))

  with open(os.path.join(examples.uri, contracts.QUARANTINE_FILE)) as f:
    quarantined = [json.loads(line) for line in f]
  assert [row['path'] for row in quarantined] == ['bag/broken.png']
  assert 'undecodable' in quarantined[0]['reason']
  assert examples.get_int_custom_property(contracts.QUARANTINED_COUNT_PROPERTY) == 1
  assert examples.get_int_custom_property(contracts.LABEL_CONFLICT_COUNT_PROPERTY) == 0

  splits = [contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT]
  assert example_splits.split_names(examples.uri) == sorted(splits)
  assert examples.split_names == json.dumps(splits)
  paths = {split: _source_paths(examples, split) for split in splits}
  assert sorted(paths['train'] + paths['eval']) == sorted(
      f'{label}/{name}' for label in CLASSES
      for name in os.listdir(os.path.join(data_dir, label)) if name != 'broken.png')
  for split in splits:         # stratified: every class in both splits
    assert sorted(set(_labels(examples, split))) == CLASSES


def test_component_is_file_based_example_gen_with_this_executor(tmp_path):
  example_gen = component.ImageExampleGen(str(tmp_path), 0.2, fixed_split=False,
                                          max_image_pixels=1000, unlabeled_dir='/u')
  assert example_gen.executor_spec.executor_class is executor.Executor
  assert example_gen.driver_class is component._Driver  # pylint: disable=protected-access
  assert (example_gen.outputs[standard_component_specs.EXAMPLES_KEY].type
          is standard_artifacts.Examples)
  properties = _exec_properties(example_gen)
  assert executor.max_image_pixels(properties) == 1000
  assert executor.unlabeled_dir(properties) == '/u'
  assert executor.max_file_bytes(properties) == executor.DEFAULT_MAX_FILE_BYTES
  assert executor.follow_external_symlinks(properties) is True
  # No unlabeled folder, no key: runs without one keep their cache.
  without = _exec_properties(component.ImageExampleGen(str(tmp_path), 0.2, fixed_split=False))
  assert executor._custom_config(  # pylint: disable=protected-access
      without, spec.UNLABELED_DIR_KEY, None) is None
