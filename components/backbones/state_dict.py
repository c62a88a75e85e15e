"""Reads a PyTorch `.pth` state dict into numpy arrays without importing torch.

Unpickling an arbitrary file can run arbitrary code, so the unpickler admits
only the handful of names a state dict is made of, each mapped to a harmless
stand-in, and refuses everything else. Both of torch's on-disk layouts are
read: the legacy one (a stream of pickles followed by raw storage bytes; the
packaged EfficientNet-Lite0 file is in it) and the zip one (torch >= 1.6).
"""

import collections
import io
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Dict

import numpy as np

# torch.save writes this number first in the legacy layout.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    'DoubleStorage': np.float64,
    'FloatStorage': np.float32,
    'HalfStorage': np.float16,
    'LongStorage': np.int64,
    'IntStorage': np.int32,
    'ShortStorage': np.int16,
    'CharStorage': np.int8,
    'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class _StorageType:
  """Stands in for a `torch.*Storage` class: only its element dtype matters."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype).newbyteorder('<')  # torch writes little-endian


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size, stride, *_):
  """Stands in for `torch._utils._rebuild_tensor_v2`: a strided view.

  A view, not a copy, because in the legacy layout the storage bytes are only
  read after the whole pickle; `load_state_dict` copies at the end. The bounds
  check keeps a corrupt or hostile file from reading outside the storage.
  """
  if len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
    raise pickle.UnpicklingError(f'Invalid tensor size {size} / stride {stride}.')
  if 0 not in size:
    last = offset + sum((n - 1) * step for n, step in zip(size, stride))
    if last >= storage.size:
      raise pickle.UnpicklingError(
          f'Tensor of size {size} overruns its storage of {storage.size}.')
  return np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size),
      strides=tuple(step * storage.itemsize for step in stride))


_ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    **{('torch', name): _StorageType(dtype)
       for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the allow-listed names; storages come from `load_storage`."""

  def __init__(self, file: BinaryIO, load_storage=None):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f'Refusing to load {module}.{name}: a state dict holds only tensors '
          f'(allowed: {sorted(".".join(key) for key in _ALLOWED)}).') from None

  def persistent_load(self, pid) -> np.ndarray:
    if not (self._load_storage and isinstance(pid, tuple) and len(pid) >= 5
            and pid[0] == 'storage'):
      raise pickle.UnpicklingError(f'Unsupported persistent id {pid!r}.')
    storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f'Not a storage type: {storage_type!r}.')
    storage = self._load_storage(str(key), storage_type.dtype, numel)
    view = pid[5] if len(pid) > 5 else None
    if view is not None:  # very old files: (view_key, offset, view_size)
      _, view_offset, view_size = view
      storage = storage[view_offset:view_offset + view_size]
    return storage


def _load_legacy(file: BinaryIO) -> Dict[str, np.ndarray]:
  """Legacy layout: magic, protocol, sys info, the dict, storage keys, bytes.

  Each storage is allocated empty when the dict first refers to it and filled
  from the raw bytes (an int64 element count, then the elements) afterwards.
  """
  def plain(f):
    return _RestrictedUnpickler(f).load()

  if plain(file) != _LEGACY_MAGIC:
    raise pickle.UnpicklingError('Not a PyTorch file (bad magic number).')
  protocol = plain(file)
  if protocol != 1001:
    raise pickle.UnpicklingError(f'Unsupported PyTorch protocol {protocol}.')
  if not plain(file).get('little_endian', True):
    raise pickle.UnpicklingError('Big-endian PyTorch files are not supported.')

  storages: Dict[str, np.ndarray] = {}

  def load_storage(key, dtype, numel):
    if key not in storages:
      storages[key] = np.empty(numel, dtype)
    return storages[key]

  state = _RestrictedUnpickler(file, load_storage).load()
  for key in plain(file):
    storage = storages[str(key)]
    (numel,) = struct.unpack('<q', file.read(8))
    if numel != storage.size:
      raise pickle.UnpicklingError(
          f'Storage {key}: {numel} elements on disk, {storage.size} expected.')
    if file.readinto(memoryview(storage).cast('B')) != storage.nbytes:
      raise pickle.UnpicklingError(f'Storage {key} is truncated.')
  return state


def _load_zip(path: str) -> Dict[str, np.ndarray]:
  """Zip layout: `<root>/data.pkl` plus one `<root>/data/<key>` per storage."""
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    if any(n.endswith('/byteorder') and archive.read(n) != b'little'
           for n in names):
      raise pickle.UnpicklingError('Big-endian PyTorch files are not supported.')
    (pickle_name,) = [n for n in names if n.endswith('/data.pkl')]
    root = pickle_name[:-len('data.pkl')]

    def load_storage(key, dtype, numel):
      return np.frombuffer(archive.read(f'{root}data/{key}'), dtype, numel)

    return _RestrictedUnpickler(io.BytesIO(archive.read(pickle_name)),
                                load_storage).load()


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Tensor name -> numpy array for a `.pth` file, legacy or zip layout."""
  if zipfile.is_zipfile(path):
    state = _load_zip(path)
  else:
    with open(path, 'rb') as file:
      state = _load_legacy(file)
  if not (isinstance(state, dict) and
          all(isinstance(value, np.ndarray) for value in state.values())):
    raise pickle.UnpicklingError(f'{path} does not hold a state dict of tensors.')
  # Copies detach each tensor from its (possibly shared, strided) storage.
  return {name: value.astype(value.dtype.newbyteorder('='))
          for name, value in state.items()}
