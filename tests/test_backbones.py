"""The backbones with their real weights: ImageNet accuracy on a known cat, exact
weight loading, and a state-dict reader that refuses to run code."""

import collections
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tf_keras

from components.backbones import efficientnet_lite
from components.backbones import get_backbone
from components.backbones import keras_applications
from components.backbones import state_dict as state_dict_lib

IMAGENET_CATS = {281: 'tabby', 282: 'tiger cat', 283: 'Persian cat',
                 284: 'Siamese cat', 285: 'Egyptian cat'}


@pytest.fixture(scope='module')
def imagenet_state():
  return efficientnet_lite.imagenet_state_dict()


@pytest.fixture(scope='module')
def classifier():
  return efficientnet_lite.build_efficientnet_lite0(224, 'imagenet', include_top=True)


def test_lite0_recognizes_a_cat(classifier):
  spec = get_backbone('efficientnet_lite0')
  image = tf.image.resize(tf.cast(skimage.data.chelsea(), tf.float32), [224, 224])
  probabilities = classifier(spec.normalize(image)[tf.newaxis], training=False)[0]
  top5 = np.argsort(probabilities.numpy())[::-1][:5]
  print('chelsea top-5:', [(int(c), IMAGENET_CATS.get(c, '?'),
                            round(float(probabilities[c]), 4)) for c in top5])
  assert set(top5) & set(IMAGENET_CATS)


def test_lite0_parameter_count_matches_the_file(classifier, imagenet_state):
  in_file = sum(value.size for key, value in imagenet_state.items()
                if not key.endswith('num_batches_tracked'))
  assert classifier.count_params() == in_file == 4_694_024


def test_feature_extractor_output_is_the_last_feature_map():
  model = get_backbone('efficientnet_lite0').build(224, 'imagenet')
  assert model(tf.zeros([1, 224, 224, 3])).shape == (1, 7, 7, 1280)


@pytest.mark.parametrize('change, named_key', [
    (lambda state: state.pop('_blocks.3._bn1.running_var'), '_blocks.3._bn1.running_var'),
    (lambda state: state.update({'_blocks.99._extra.weight': np.zeros(3)}),
     '_blocks.99._extra.weight'),
    (lambda state: state.update({'_conv_head.weight': np.zeros([1280, 32, 1, 1])}),
     'head_conv'),
], ids=['missing_key', 'extra_key', 'wrong_shape'])
def test_loading_fails_loudly_when_weights_do_not_fit(imagenet_state, change, named_key):
  state = dict(imagenet_state)
  change(state)
  model = efficientnet_lite.efficientnet_lite0(64, include_top=True)
  with pytest.raises(ValueError, match=named_key.replace('.', r'\.')):
    efficientnet_lite.assign_state_dict(model, state)


def _os_system_pickle(command: str) -> bytes:
  class Exploit:
    def __reduce__(self):
      return os.system, (command,)
  return pickle.dumps(Exploit(), protocol=2)


@pytest.mark.parametrize('layout', ['legacy', 'zip'])
def test_pickle_that_runs_code_is_refused(tmp_path, layout):
  marker = tmp_path / 'pwned'
  payload = _os_system_pickle(f'touch {marker}')
  path = tmp_path / 'evil.pth'
  if layout == 'zip':
    with zipfile.ZipFile(path, 'w') as archive:
      archive.writestr('archive/data.pkl', payload)
  else:
    path.write_bytes(payload)
  with pytest.raises(pickle.UnpicklingError, match='system'):
    state_dict_lib.load_state_dict(str(path))
  assert not marker.exists()


def _write_zip_state_dict(path, state, monkeypatch):
  """Writes `state` as torch >= 1.6 would, with stand-ins for torch's names."""
  torch, torch_utils = types.ModuleType('torch'), types.ModuleType('torch._utils')
  float_storage = type('FloatStorage', (), {'__module__': 'torch'})
  torch.FloatStorage = float_storage

  def _rebuild_tensor_v2(*args):
    del args
  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  monkeypatch.setitem(sys.modules, 'torch', torch)
  monkeypatch.setitem(sys.modules, 'torch._utils', torch_utils)

  class Storage:
    def __init__(self, key, array):
      self.key, self.array = key, array

  class Tensor:
    def __init__(self, storage):
      self.storage = storage

    def __reduce__(self):
      array = self.storage.array
      strides = tuple(s // array.itemsize for s in array.strides)
      return _rebuild_tensor_v2, (self.storage, 0, array.shape, strides, False,
                                  collections.OrderedDict())

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, Storage):
        return ('storage', float_storage, obj.key, 'cpu', obj.array.size)
      return None

  storages = [Storage(str(i), np.ascontiguousarray(value, np.float32))
              for i, value in enumerate(state.values())]
  with zipfile.ZipFile(path, 'w') as archive:
    with archive.open('archive/data.pkl', 'w') as file:
      Pickler(file, protocol=2).dump(collections.OrderedDict(
          (name, Tensor(storage)) for name, storage in zip(state, storages)))
    for storage in storages:
      archive.writestr(f'archive/data/{storage.key}', storage.array.tobytes())


def test_zip_layout_round_trips(tmp_path, monkeypatch, imagenet_state):
  state = {k: v for k, v in imagenet_state.items() if k.startswith('_blocks.1.')}
  path = tmp_path / 'lite0.pth'
  _write_zip_state_dict(path, state, monkeypatch)
  loaded = state_dict_lib.load_state_dict(str(path))
  assert loaded.keys() == state.keys()
  for key, value in state.items():
    np.testing.assert_array_equal(loaded[key], value)


def test_unknown_backbone_names_the_valid_ones():
  with pytest.raises(ValueError, match='efficientnet_lite0.*mobilenet_v2'):
    get_backbone('nope')


def test_keras_application_builds_a_feature_map():
  model = get_backbone('mobilenet_v2').build(96, None)
  assert model(tf.zeros([2, 96, 96, 3])).shape == (2, 3, 3, 1280)


# Each application's own preprocessing, which `normalize` must reproduce.
PREPROCESS_INPUT = {
    'mobilenet_v2': tf_keras.applications.mobilenet_v2.preprocess_input,
    'efficientnet_b0': tf_keras.applications.efficientnet.preprocess_input,
    'resnet50': tf_keras.applications.resnet50.preprocess_input,
    'vgg16': tf_keras.applications.vgg16.preprocess_input,
}


@pytest.mark.parametrize('name', sorted(keras_applications.APPLICATIONS))
def test_keras_application_normalize_matches_preprocess_input(name):
  images = np.random.default_rng(0).uniform(0, 255, [2, 8, 8, 3]).astype(np.float32)
  np.testing.assert_allclose(get_backbone(name).normalize(tf.constant(images)),
                             PREPROCESS_INPUT[name](images.copy()), atol=1e-4)
