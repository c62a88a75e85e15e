"""The versioned model registry, in the layout TF Serving watches.

    <registry>/<model name>/<version>/saved_model.pb, variables/, assets/ ...
                                      labels.txt          class names, one per line, in id order
                                      model_record.json   metrics, data fingerprint, pipeline run
                                      model.tflite        the model for edge runtimes (pusher)
                                      PUBLISHED           completion marker, written last

Versions are integers (ASCII digits) that only grow. Every reader here
(`versions`, `version_dir`, `find_version`, pipeline/registry.py) sees only
published versions.

On a local or mounted filesystem a version is assembled in a hidden staging
folder, every file and folder fsynced, and published with one atomic rename
(which also claims the number: renaming onto an existing version fails), so a
reader, TF Serving included, never sees half a version, nor after a power cut
a version with empty files. A publisher killed half way leaves its staging
folder behind; the next publish removes it (see `_remove_abandoned_staging`).
A version folder there is complete by construction, so old versions,
published before the marker existed, stay readable without it.

In object storage (gs://, s3://: the Vertex AI target, through tf.io.gfile)
there is no rename: a publisher claims the next number by creating
`<version>/CLAIM` only if absent (`Claims`), writes the files in place,
saved_model.pb last, and the marker after everything. A version without the
marker is unfinished (being written, or its publisher was killed) and readers
skip it; its number stays taken. TF Serving polls integer folders and cannot
see the marker: it may load a version from saved_model.pb on, before the
marker (docs/registry.md).
"""

import contextlib
import fcntl
import json
import logging
import os
import posixpath
import re
import shutil
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence

LABELS_FILE = 'labels.txt'
RECORD_FILE = 'model_record.json'
PUBLISHED_FILE = 'PUBLISHED'
CLAIM_FILE = 'CLAIM'
_VERSION_PATTERN = re.compile(r'[0-9]+')
_MODEL_NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,127}')
_STAGING_PREFIX = '.staging-'
_LOCK_SUFFIX = '.lock'
_ABANDONED_AFTER_SECONDS = 3600
# Record key naming the Trainer output a version was copied from.
MODEL_URI_KEY = 'model_artifact_uri'


def gfile():
  """tf.io.gfile, imported on first use: alias changes on a local registry
  (pipeline/registry.py) do without TensorFlow and start in a fraction of a second."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def is_object_store(path: str) -> bool:
  """gs://, s3://, ...: no rename, no flock; read and written through tf.io.gfile."""
  return '://' in path


class _LocalFiles:
  """The tf.io.gfile calls publishing makes, on local paths without TensorFlow:
  a publisher process then starts in a fraction of a second."""
  exists = staticmethod(os.path.exists)
  walk = staticmethod(os.walk)

  @staticmethod
  def makedirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)

  @staticmethod
  def copy(source: str, target: str, overwrite: bool = False) -> None:
    if not overwrite and os.path.exists(target):
      raise FileExistsError(target)
    shutil.copyfile(source, target)

  @staticmethod
  def GFile(path: str, mode: str):  # pylint: disable=invalid-name
    return open(path, mode, encoding=None if 'b' in mode else 'utf-8')  # pylint: disable=consider-using-with


def files_for(*paths: str):
  """tf.io.gfile when any of `paths` is in an object store, else local calls."""
  return gfile() if any(map(is_object_store, paths)) else _LocalFiles


def validate_model_name(model_name: str) -> str:
  """Model names are one folder inside the registry: never `..`, `/` or hidden."""
  if not isinstance(model_name, str) or not _MODEL_NAME_PATTERN.fullmatch(
      model_name) or model_name in ('.', '..'):
    raise ValueError(f'Invalid model name {model_name!r}: use a letter or digit '
                     'followed by up to 127 letters, digits, ., - or _')
  return model_name


def listdir(path: str) -> List[str]:
  """Names in a folder (none when it is missing), locally or in an object store."""
  if is_object_store(path):
    files_io = gfile()
    if not files_io.isdir(path):
      return []
    return [name.rstrip('/') for name in files_io.listdir(path)]
  return os.listdir(path) if os.path.isdir(path) else []


def open_text(path: str, mode: str = 'r'):
  """A registry text file (record, labels): local files directly, so that the
  CLI's reads of a local registry never import TensorFlow; object storage
  through tf.io.gfile."""
  return files_for(path).GFile(path, mode)


def _numbers(model_dir: str) -> List[int]:
  """Every version number in use, published or not, ascending."""
  return sorted(int(name) for name in listdir(model_dir) if is_version_number(name))


def is_published(registry_dir: str, model_name: str, version: int) -> bool:
  """Locally every version folder is complete (it appeared by rename); in an
  object store only one with its completion marker."""
  path = os.path.join(registry_dir, validate_model_name(model_name), str(version))
  if is_object_store(path):
    return gfile().exists(os.path.join(path, PUBLISHED_FILE))
  return os.path.isdir(path)


def versions(registry_dir: str, model_name: str) -> List[int]:
  """Published versions of a model, oldest first."""
  model_dir = os.path.join(registry_dir, validate_model_name(model_name))
  return [version for version in _numbers(model_dir)
          if is_published(registry_dir, model_name, version)]


def is_version_number(text: str) -> bool:
  """Versions are ASCII digits only (str.isdigit also accepts '²')."""
  return isinstance(text, str) and bool(_VERSION_PATTERN.fullmatch(text))


def latest_version(registry_dir: str, model_name: str) -> int:
  published = versions(registry_dir, model_name)
  if not published:
    raise FileNotFoundError(
        f'No published version of {model_name!r} under {registry_dir}')
  return published[-1]


def version_dir(registry_dir: str, model_name: str,
                version: Optional[int] = None) -> str:
  """Folder of published `version`, or of the newest one when it is None."""
  if version is None:
    version = latest_version(registry_dir, model_name)
  elif not is_published(registry_dir, model_name, version):
    published = versions(registry_dir, model_name)
    raise FileNotFoundError(
        f'No version {version} of {model_name!r} in {registry_dir} '
        f'(published: {", ".join(map(str, published)) or "none"})')
  return os.path.join(registry_dir, model_name, str(version))


def read_record(model_dir: str) -> Dict[str, Any]:
  with open_text(os.path.join(model_dir, RECORD_FILE)) as f:
    return json.load(f)


def find_version(registry_dir: str, model_name: str,
                 model_uri: str) -> Optional[int]:
  """The newest published version copied from `model_uri`, if any."""
  for version in reversed(versions(registry_dir, model_name)):
    path = os.path.join(registry_dir, model_name, str(version))
    if read_record(path).get(MODEL_URI_KEY) == model_uri:
      return version
  return None


def read_labels(model_dir: str) -> List[str]:
  with open_text(os.path.join(model_dir, LABELS_FILE)) as f:
    return [line.rstrip('\n') for line in f]


class Claims:
  """Create-if-absent of an empty object: how object-store publishers take a
  version number. This fallback checks then writes, which two publishers can
  interleave; `claims_for` returns an atomic one where the store offers it."""

  def claim(self, path: str) -> bool:
    """Creates `path` unless it exists; True when this call created it."""
    files_io = gfile()
    if files_io.exists(path):
      return False
    with files_io.GFile(path, 'w') as f:
      f.write('')
    return True


class GcsClaims(Claims):
  """Atomic on Cloud Storage: the upload succeeds only if no object (generation 0)
  exists under the name."""

  def __init__(self):
    from google.cloud import storage  # pylint: disable=g-import-not-at-top
    self._client = storage.Client()

  def claim(self, path: str) -> bool:
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    bucket, name = path[len('gs://'):].split('/', 1)
    try:
      self._client.bucket(bucket).blob(name).upload_from_string(
          b'', if_generation_match=0)
    except exceptions.PreconditionFailed:
      return False
    return True


def claims_for(registry_dir: str) -> Claims:
  """The claim implementation of the registry's store."""
  if registry_dir.startswith('gs://'):
    try:
      return GcsClaims()
    except ImportError:
      pass
  logging.warning('No atomic create-if-absent for %s: two concurrent publishers '
                  'could claim the same version number', registry_dir)
  return Claims()


def publish(saved_model_dir: str, registry_dir: str, model_name: str,
            class_names: List[str], record: Dict[str, Any],
            extra_files: Sequence[str] = ()) -> int:
  """Copies a SavedModel in as the next version; returns the version number.

  `extra_files` (e.g. a TFLite model) are copied into the version folder by
  their base names, before the SavedModel, so they are published with it.

  Two concurrent publishers never take the same number: locally renaming onto
  an existing version folder fails, in object stores the claim does, and the
  loser moves on to the next number.
  """
  if not files_for(saved_model_dir).exists(
      os.path.join(saved_model_dir, 'saved_model.pb')):
    raise FileNotFoundError(f'No SavedModel at {saved_model_dir}')
  model_dir = os.path.join(registry_dir, validate_model_name(model_name))
  files_for(model_dir).makedirs(model_dir)
  version = (_numbers(model_dir) or [0])[-1] + 1
  if is_object_store(registry_dir):
    claims = claims_for(registry_dir)
    while not claims.claim(os.path.join(model_dir, str(version), CLAIM_FILE)):
      version += 1
    _write_version(saved_model_dir, os.path.join(model_dir, str(version)),
                   class_names, record, version, extra_files)
    return version
  _remove_abandoned_staging(model_dir)
  # The lock is held while this publisher works: a killed publisher's lock is
  # released by the OS, which is how the next publish knows its staging folder
  # is litter.
  with _staging_lock(model_dir) as staging:
    try:
      _write_version(saved_model_dir, staging, class_names, record, version,
                     extra_files)
      while True:
        try:
          os.rename(staging, os.path.join(model_dir, str(version)))
          _fsync_path(model_dir)       # the rename itself survives a power cut
          return version
        except OSError:
          if not os.path.isdir(os.path.join(model_dir, str(version))):
            raise
          version += 1
          _write_record(staging, record, version)
          _fsync_path(os.path.join(staging, RECORD_FILE))
    finally:
      if os.path.exists(staging):
        shutil.rmtree(staging)


@contextlib.contextmanager
def _staging_lock(model_dir: str) -> Iterator[str]:
  """Yields a new staging folder path whose lock file this publisher holds.

  A concurrent `_remove_abandoned_staging` may lock and delete a lock file
  between its creation and its locking, so once the lock is held it is
  checked to still be the file under that name; if not, a new name is taken.
  """
  while True:
    staging = os.path.join(model_dir, f'{_STAGING_PREFIX}{uuid.uuid4().hex}')
    fd = os.open(staging + _LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o664)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
      if os.stat(staging + _LOCK_SUFFIX).st_ino == os.fstat(fd).st_ino:
        break
    except FileNotFoundError:
      pass
    os.close(fd)
    logging.info('The lock of %s was removed before it was held; retrying', staging)
  try:
    yield staging
  finally:
    os.remove(staging + _LOCK_SUFFIX)   # still held: no cleanup can race this
    os.close(fd)


def _remove_abandoned_staging(model_dir: str) -> None:
  """Removes staging folders left by publishers that were killed (their lock is
  free), and lock-less ones older than an hour (left before locks existed)."""
  for name in os.listdir(model_dir):
    path = os.path.join(model_dir, name)
    if not name.startswith(_STAGING_PREFIX):
      continue
    if name.endswith(_LOCK_SUFFIX):
      try:
        lock = open(path, 'r+')  # pylint: disable=consider-using-with
      except FileNotFoundError:
        continue                # its publisher finished, or another cleanup ran
      with lock:
        try:
          fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
          continue              # a live publisher
        shutil.rmtree(path[:-len(_LOCK_SUFFIX)], ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)       # another cleanup may have removed it first
      logging.info('Removed the staging folder of a killed publish: %s', path)
    elif (os.path.isdir(path) and not os.path.exists(path + _LOCK_SUFFIX)
          and time.time() - os.path.getmtime(path) > _ABANDONED_AFTER_SECONDS):
      shutil.rmtree(path, ignore_errors=True)
      logging.info('Removed an abandoned staging folder: %s', path)


def _write_version(saved_model_dir: str, destination: str, class_names: List[str],
                   record: Dict[str, Any], version: int,
                   extra_files: Sequence[str]) -> None:
  """Labels, record and extra files first, the SavedModel's files after,
  saved_model.pb last, then the completion marker; locally each file and
  folder is fsynced before the marker is written."""
  files_io = files_for(saved_model_dir, destination, *extra_files)
  files_io.makedirs(destination)
  with files_io.GFile(os.path.join(destination, LABELS_FILE), 'w') as f:
    f.write(''.join(f'{name}\n' for name in class_names))
  _write_record(destination, record, version)
  for path in extra_files:
    files_io.copy(path, os.path.join(destination, os.path.basename(path)), overwrite=True)
  files = [os.path.relpath(os.path.join(directory, name), saved_model_dir)
           for directory, _, names in files_io.walk(saved_model_dir)
           for name in names]
  for relative in sorted(files, key=lambda path: path == 'saved_model.pb'):
    target = os.path.join(destination, relative)
    files_io.makedirs(posixpath.dirname(target))
    files_io.copy(os.path.join(saved_model_dir, relative), target, overwrite=True)
  if not is_object_store(destination):
    _fsync_tree(destination)
  with files_io.GFile(os.path.join(destination, PUBLISHED_FILE), 'w') as f:
    f.write('')
  if not is_object_store(destination):
    _fsync_path(os.path.join(destination, PUBLISHED_FILE))
    _fsync_path(destination)


def _write_record(destination: str, record: Dict[str, Any], version: int) -> None:
  with open_text(os.path.join(destination, RECORD_FILE), 'w') as f:
    json.dump({**record, 'version': version}, f, indent=2, sort_keys=True)


def _fsync_tree(root: str) -> None:
  """Flushes every file, then every folder (deepest first), to disk."""
  for directory, _, names in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
    for name in names:
      _fsync_path(os.path.join(directory, name))
    _fsync_path(directory)


def _fsync_path(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
