"""The backbones with their real weights: ImageNet accuracy on a known cat, exact
weight loading, and a state-dict reader that refuses to run code."""

import collections
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tf_keras

from models.backbones import efficientnet_lite
from models.backbones import get_backbone
from models.backbones import keras_applications
from models.backbones import state_dict as state_dict_lib
import torch_pickles

IMAGENET_CATS = {281: 'tabby', 282: 'tiger cat', 283: 'Persian cat',
                 284: 'Siamese cat', 285: 'Egyptian cat'}


# Parameters in each variant's weights file (classifier included).
PARAMETER_COUNTS = {'efficientnet_lite0': 4_694_024,
                    'efficientnet_lite1': 5_470_344,
                    'efficientnet_lite2': 6_150_168}


@pytest.fixture(scope='module')
def imagenet_state():
  return efficientnet_lite.imagenet_state_dict('efficientnet_lite0')


# One classifier per variant, at its native size, shared by the tests below.
@pytest.fixture(scope='module', params=sorted(efficientnet_lite.VARIANTS))
def variant_classifier(request):
  name = request.param
  return name, efficientnet_lite.build(name, None, 'imagenet', include_top=True)


def test_variant_recognizes_a_cat(variant_classifier):
  name, classifier = variant_classifier
  spec = get_backbone(name)
  size = spec.default_image_size
  assert classifier.input_shape == (None, size, size, 3)
  image = tf.image.resize(tf.cast(skimage.data.chelsea(), tf.float32), [size, size])
  probabilities = classifier(spec.normalize(image)[tf.newaxis], training=False)[0]
  top5 = np.argsort(probabilities.numpy())[::-1][:5]
  print(f'{name} chelsea top-5:', [(int(c), IMAGENET_CATS.get(c, '?'),
                                    round(float(probabilities[c]), 4)) for c in top5])
  assert set(top5) & set(IMAGENET_CATS)


def test_variant_parameter_count_matches_the_file(variant_classifier):
  name, classifier = variant_classifier
  in_file = sum(value.size for key, value in
                efficientnet_lite.imagenet_state_dict(name).items()
                if not key.endswith('num_batches_tracked'))
  assert classifier.count_params() == in_file == PARAMETER_COUNTS[name]


def test_native_image_sizes():
  assert {name: get_backbone(name).default_image_size
          for name in efficientnet_lite.VARIANTS} == {
              'efficientnet_lite0': 224, 'efficientnet_lite1': 240,
              'efficientnet_lite2': 260}


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
  model = efficientnet_lite.efficientnet_lite('efficientnet_lite0', 64, include_top=True)
  with pytest.raises(ValueError, match=named_key.replace('.', r'\.')):
    efficientnet_lite.assign_state_dict(model, state)


def test_another_variants_weights_are_refused_naming_the_variant(imagenet_state):
  model = efficientnet_lite.efficientnet_lite('efficientnet_lite2', 64)
  with pytest.raises(ValueError, match=r'EfficientNet-Lite2 model.*_blocks\.16\.'):
    efficientnet_lite.assign_state_dict(model, imagenet_state)


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


def test_zip_layout_round_trips(tmp_path, monkeypatch, imagenet_state):
  state = {k: v for k, v in imagenet_state.items() if k.startswith('_blocks.1.')}
  path = tmp_path / 'lite0.pth'
  torch_pickles.write_zip_state_dict(path, state, monkeypatch)
  loaded = state_dict_lib.load_state_dict(str(path))
  assert loaded.keys() == state.keys()
  for key, value in state.items():
    np.testing.assert_array_equal(loaded[key], value)


def _write_legacy_state_dict(path, numel, views, monkeypatch, data=None):
  """A legacy-layout file: one float storage of `numel` elements (`data`, zeros
  by default) and tensors name -> (offset, size, stride) viewing it."""
  float_storage, rebuild = torch_pickles.torch_stand_ins(monkeypatch)
  storage = object()

  class Tensor:
    def __init__(self, view):
      self.view = view

    def __reduce__(self):
      return rebuild, (storage, *self.view, False, collections.OrderedDict())

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ('storage', float_storage, '0', 'cpu', numel, None) if obj is storage else None

  with open(path, 'wb') as file:
    for header in (state_dict_lib._LEGACY_MAGIC, 1001, {'little_endian': True}):
      pickle.dump(header, file, protocol=2)
    Pickler(file, protocol=2).dump(collections.OrderedDict(
        (name, Tensor(view)) for name, view in views.items()))
    pickle.dump(['0'], file, protocol=2)
    file.write(struct.pack('<q', numel) +
               (np.zeros(numel, '<f4') if data is None else data).tobytes())


def test_legacy_layout_round_trips_a_strided_view(tmp_path, monkeypatch):
  path = tmp_path / 'ok.pth'
  _write_legacy_state_dict(path, 6, {'t': (0, (3, 2), (1, 3))}, monkeypatch,
                           data=np.arange(6, dtype='<f4'))
  np.testing.assert_array_equal(state_dict_lib.load_state_dict(str(path))['t'],
                                np.arange(6, dtype=np.float32).reshape(2, 3).T)


def test_zero_strides_cannot_repeat_a_storage_into_a_huge_tensor(tmp_path, monkeypatch):
  """A few hundred bytes: one element, viewed as 2**20 by a zero stride (the
  copy would allocate that; 2**40 would be 4 TB)."""
  path = tmp_path / 'zero_stride.pth'
  _write_legacy_state_dict(path, 1, {'t': (0, (2**20,), (0,))}, monkeypatch)
  assert path.stat().st_size < 500
  with pytest.raises(pickle.UnpicklingError,
                     match=r'1048576 elements, more than the 1 of its storage'):
    state_dict_lib.load_state_dict(str(path))


def test_a_storage_larger_than_max_bytes_is_refused_before_allocating(
    tmp_path, monkeypatch):
  path = tmp_path / 'huge_storage.pth'
  _write_legacy_state_dict(path, 10**12, {'t': (0, (4,), (1,))}, monkeypatch,
                           data=np.zeros(4, '<f4'))
  with pytest.raises(pickle.UnpicklingError,
                     match=r'Storage 0 needs 4000000000000 bytes, more than .*MAX_BYTES'):
    state_dict_lib.load_state_dict(str(path))


def test_tensor_copies_count_towards_max_bytes(tmp_path, monkeypatch):
  """Eight tensors viewing one 1 MB storage would copy 8 MB."""
  path = tmp_path / 'many_views.pth'
  views = {f't{i}': (0, (2**18,), (1,)) for i in range(8)}
  _write_legacy_state_dict(path, 2**18, views, monkeypatch)
  assert state_dict_lib.MAX_BYTES >= 2**30
  monkeypatch.setattr(state_dict_lib, 'MAX_BYTES', 4 * 2**20)
  with pytest.raises(pickle.UnpicklingError, match=r'Copying the tensors needs 8388608'):
    state_dict_lib.load_state_dict(str(path))


@pytest.mark.parametrize('build', [
    # torch.FloatStorage's dtype set to float64
    b'ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x03\x00\x00\x00<f8sb.',
    # _rebuild_tensor_v2.__defaults__ = (1,), through BUILD's slot state
    b'ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b.',
], ids=['storage_dtype', 'function_defaults'])
def test_a_pickle_cannot_change_the_shared_stand_ins(tmp_path, monkeypatch, build):
  """BUILD on an allowed name is refused, and the next file loads as before."""
  evil = tmp_path / 'evil.pth'
  evil.write_bytes(b'\x80\x02' + build)
  with pytest.raises(pickle.UnpicklingError, match='Refusing to change'):
    state_dict_lib.load_state_dict(str(evil))
  state = {'w': np.arange(6, dtype=np.float32).reshape(2, 3)}
  torch_pickles.write_zip_state_dict(tmp_path / 'ok.pth', state, monkeypatch)
  loaded = state_dict_lib.load_state_dict(str(tmp_path / 'ok.pth'))
  assert loaded['w'].dtype == np.float32
  np.testing.assert_array_equal(loaded['w'], state['w'])


def test_zip_member_size_is_checked_before_reading(tmp_path, monkeypatch):
  """A storage member that inflates to 64 MB where 24 bytes are expected (a
  64 KB deflated zip bomb) is refused from the zip directory, unread."""
  torch_pickles.write_zip_state_dict(tmp_path / 'ok.pth', {'w': np.zeros(6, np.float32)}, monkeypatch)
  path = tmp_path / 'bomb.pth'
  with zipfile.ZipFile(tmp_path / 'ok.pth') as source, \
       zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
    for name in source.namelist():
      content = source.read(name)
      archive.writestr(name, content + bytes(64 * 2**20) if name.endswith('/0') else content)
  assert path.stat().st_size < 2**20
  with pytest.raises(pickle.UnpicklingError, match=r'67108888 bytes in the zip, 24 expected'):
    state_dict_lib.load_state_dict(str(path))


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
