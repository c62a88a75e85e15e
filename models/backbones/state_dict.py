"""Reads a PyTorch `.pth` state dict into numpy arrays without importing torch.

Unpickling an arbitrary file can run arbitrary code, so the unpickler admits
only the handful of names a state dict is made of, each mapped to a harmless
stand-in, and refuses everything else. Both of torch's on-disk layouts are
read: the legacy one (a stream of pickles followed by raw storage bytes; the
packaged EfficientNet-Lite0 file is in it) and the zip one (torch >= 1.6).

A hostile file must not make the loader allocate more than it holds either:
every tensor's elements must lie in its storage, the stand-ins cannot be
changed by the pickle, and storages plus the final copies are capped at
`MAX_BYTES`, checked before anything is allocated or read.
"""

import collections
import io
import math
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Dict

import numpy as np

# torch.save writes this number first in the legacy layout.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# The most bytes one file may make the loader hold: its storages plus the
# tensors copied out of them. EfficientNet-Lite0 needs 38 MB.
MAX_BYTES = 1 << 30

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


class _Immutable:
  """The stand-ins are shared by every load, so a pickle's BUILD on one
  (`__setstate__`, or setting attributes) is refused rather than changing it
  for the next file."""
  __slots__ = ()

  def __setattr__(self, name, value):
    raise pickle.UnpicklingError(f'Refusing to change {self!r}.')

  def __setstate__(self, state):
    raise pickle.UnpicklingError(f'Refusing to change {self!r}.')


class _StorageType(_Immutable):
  """Stands in for a `torch.*Storage` class: only its element dtype matters."""
  __slots__ = ('dtype',)

  def __init__(self, dtype):
    # torch writes little-endian
    object.__setattr__(self, 'dtype', np.dtype(dtype).newbyteorder('<'))

  def __repr__(self):
    return f'<storage type {self.dtype}>'


class _Budget:
  """Bytes a load may still allocate or read, out of `MAX_BYTES`."""

  def __init__(self):
    self._left = MAX_BYTES

  def take(self, nbytes: int, what: str) -> None:
    if nbytes > self._left:
      raise pickle.UnpicklingError(
          f'{what} needs {nbytes} bytes, more than the {self._left} left of the '
          f'{MAX_BYTES} a weights file may use (state_dict.MAX_BYTES).')
    self._left -= nbytes


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size, stride, *_):
  """Stands in for `torch._utils._rebuild_tensor_v2`: a strided view.

  A view, not a copy, because in the legacy layout the storage bytes are only
  read after the whole pickle; `load_state_dict` copies at the end. The bounds
  checks keep a corrupt or hostile file from reading outside the storage, and
  from declaring more elements than it holds (zero strides would repeat one
  element any number of times, which the copy would then allocate).
  """
  if len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
    raise pickle.UnpicklingError(f'Invalid tensor size {size} / stride {stride}.')
  if math.prod(size) > storage.size - offset:
    raise pickle.UnpicklingError(
        f'Tensor of size {size} has {math.prod(size)} elements, more than the '
        f'{storage.size - offset} of its storage from offset {offset}.')
  if 0 not in size:
    last = offset + sum((n - 1) * step for n, step in zip(size, stride))
    if last >= storage.size:
      raise pickle.UnpicklingError(
          f'Tensor of size {size} overruns its storage of {storage.size}.')
  return np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size),
      strides=tuple(step * storage.itemsize for step in stride))


class _RebuildTensorV2(_Immutable):
  """`_rebuild_tensor_v2` as the unpickler hands it out (a function could be
  changed by BUILD, e.g. its `__defaults__`)."""
  __slots__ = ()

  def __call__(self, *args):
    return _rebuild_tensor_v2(*args)

  def __repr__(self):
    return '<_rebuild_tensor_v2>'


_ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _RebuildTensorV2(),
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
    if not isinstance(numel, int) or numel < 0:
      raise pickle.UnpicklingError(f'Invalid storage size {numel!r}.')
    storage = self._load_storage(str(key), storage_type.dtype, numel)
    view = pid[5] if len(pid) > 5 else None
    if view is not None:  # very old files: (view_key, offset, view_size)
      _, view_offset, view_size = view
      storage = storage[view_offset:view_offset + view_size]
    return storage


def _load_legacy(file: BinaryIO, budget: _Budget) -> Dict[str, np.ndarray]:
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
      budget.take(numel * dtype.itemsize, f'Storage {key}')
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


def _load_zip(path: str, budget: _Budget) -> Dict[str, np.ndarray]:
  """Zip layout: `<root>/data.pkl` plus one `<root>/data/<key>` per storage.

  Each member's size comes from the zip directory, which also bounds what
  zipfile decompresses, so it is charged to the budget before reading.
  """
  with zipfile.ZipFile(path) as archive:

    def read(name, expected_bytes=None):
      size = archive.getinfo(name).file_size
      if expected_bytes is not None and size != expected_bytes:
        raise pickle.UnpicklingError(
            f'{name}: {size} bytes in the zip, {expected_bytes} expected.')
      budget.take(size, name)
      return archive.read(name)

    names = archive.namelist()
    if any(n.endswith('/byteorder') and read(n) != b'little'
           for n in names):
      raise pickle.UnpicklingError('Big-endian PyTorch files are not supported.')
    (pickle_name,) = [n for n in names if n.endswith('/data.pkl')]
    root = pickle_name[:-len('data.pkl')]

    def load_storage(key, dtype, numel):
      return np.frombuffer(read(f'{root}data/{key}', numel * dtype.itemsize),
                           dtype, numel)

    return _RestrictedUnpickler(io.BytesIO(read(pickle_name)),
                                load_storage).load()


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Tensor name -> numpy array for a `.pth` file, legacy or zip layout."""
  budget = _Budget()
  if zipfile.is_zipfile(path):
    state = _load_zip(path, budget)
  else:
    with open(path, 'rb') as file:
      state = _load_legacy(file, budget)
  if not (isinstance(state, dict) and
          all(isinstance(value, np.ndarray) for value in state.values())):
    raise pickle.UnpicklingError(f'{path} does not hold a state dict of tensors.')
  budget.take(sum(value.nbytes for value in state.values()), 'Copying the tensors')
  # Copies detach each tensor from its (possibly shared, strided) storage.
  return {name: value.astype(value.dtype.newbyteorder('='))
          for name, value in state.items()}
