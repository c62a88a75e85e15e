"""PyTorch state-dict files written without torch, for tests of the weights
loader (models/backbones/state_dict.py) and of runs on chosen weights."""

import collections
import pickle
import sys
import types
import zipfile

import numpy as np


def torch_stand_ins(monkeypatch):
  """A fake `torch` module holding FloatStorage and _rebuild_tensor_v2, so that
  pickle writes the names torch does."""
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
  return float_storage, _rebuild_tensor_v2


def write_zip_state_dict(path, state, monkeypatch):
  """Writes `state` as torch >= 1.6 would, with stand-ins for torch's names."""
  float_storage, _rebuild_tensor_v2 = torch_stand_ins(monkeypatch)

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
