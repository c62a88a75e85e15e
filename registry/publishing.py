"""Publishing a version: atomic on a local filesystem, claimed in object stores.

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
skip it (layout.is_published); its number stays taken. TF Serving polls
integer folders and cannot see the marker: it may load a version from
saved_model.pb on, before the marker (docs/registry.md).
"""

import contextlib
import fcntl
import json
import logging
import os
import posixpath
import shutil
import time
import uuid
from typing import Any, Dict, Iterator, List, Sequence

from components import contracts
from registry import layout

_STAGING_PREFIX = '.staging-'
_LOCK_SUFFIX = '.lock'
_ABANDONED_AFTER_SECONDS = 3600


class Claims:
  """Create-if-absent of an empty object: how object-store publishers take a
  version number. This fallback checks then writes, which two publishers can
  interleave; `claims_for` returns an atomic one where the store offers it."""

  def claim(self, path: str) -> bool:
    """Creates `path` unless it exists; True when this call created it."""
    files_io = layout.gfile()
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
  if not layout.files_for(saved_model_dir).exists(
      os.path.join(saved_model_dir, 'saved_model.pb')):
    raise FileNotFoundError(f'No SavedModel at {saved_model_dir}')
  model_dir = os.path.join(registry_dir, layout.validate_model_name(model_name))
  layout.files_for(model_dir).makedirs(model_dir)
  version = (layout.numbers_in_use(model_dir) or [0])[-1] + 1
  if contracts.is_remote(registry_dir):
    claims = claims_for(registry_dir)
    while not claims.claim(os.path.join(model_dir, str(version), layout.CLAIM_FILE)):
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
          _fsync_path(os.path.join(staging, layout.RECORD_FILE))
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
  files_io = layout.files_for(saved_model_dir, destination, *extra_files)
  files_io.makedirs(destination)
  with files_io.GFile(os.path.join(destination, layout.LABELS_FILE), 'w') as f:
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
  if not contracts.is_remote(destination):
    _fsync_tree(destination)
  with files_io.GFile(os.path.join(destination, layout.PUBLISHED_FILE), 'w') as f:
    f.write('')
  if not contracts.is_remote(destination):
    _fsync_path(os.path.join(destination, layout.PUBLISHED_FILE))
    _fsync_path(destination)


def _write_record(destination: str, record: Dict[str, Any], version: int) -> None:
  with layout.open_text(os.path.join(destination, layout.RECORD_FILE), 'w') as f:
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
