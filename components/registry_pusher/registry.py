"""The versioned model registry on disk, in the layout TF Serving watches.

    <registry>/<model name>/<version>/saved_model.pb, variables/, assets/ ...
                                      labels.txt          class names, one per line, in id order
                                      model_record.json   metrics, data fingerprint, pipeline run
                                      model.tflite        the model for edge runtimes (pusher)

Versions are integers that only grow. On a local or mounted filesystem a
version is assembled in a hidden staging folder and published with one atomic
rename, so a reader (TF Serving polls for integer folder names) never sees a
half-written version; TF Serving ignores the hidden staging folders. A
publisher killed half way leaves its staging folder behind; the next publish
removes it (see `_remove_abandoned_staging`).

The registry may also live in object storage (gs://, s3://: the Vertex AI
target), through tf.io.gfile. Object stores have no folder rename, so there a
version is copied file by file with `saved_model.pb` last; a reader polling
at that moment can see an incomplete version. Scheduled runs never overlap
(one run at a time), so only one publisher writes at once.
"""

import fcntl
import json
import logging
import os
import posixpath
import shutil
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

LABELS_FILE = 'labels.txt'
RECORD_FILE = 'model_record.json'
_STAGING_PREFIX = '.staging-'
_LOCK_SUFFIX = '.lock'
_ABANDONED_AFTER_SECONDS = 3600
# Record key naming the Trainer output a version was copied from.
MODEL_URI_KEY = 'model_artifact_uri'


def versions(registry_dir: str, model_name: str) -> List[int]:
  """Published versions of a model, oldest first."""
  model_dir = os.path.join(registry_dir, model_name)
  if not tf.io.gfile.isdir(model_dir):
    return []
  return sorted(int(name.rstrip('/')) for name in tf.io.gfile.listdir(model_dir)
                if name.rstrip('/').isdigit())


def version_dir(registry_dir: str, model_name: str,
                version: Optional[int] = None) -> str:
  """Folder of `version`, or of the newest version when it is None."""
  if version is None:
    published = versions(registry_dir, model_name)
    if not published:
      raise FileNotFoundError(
          f'No published version of {model_name!r} under {registry_dir}')
    version = published[-1]
  path = os.path.join(registry_dir, model_name, str(version))
  if not tf.io.gfile.isdir(path):
    raise FileNotFoundError(f'No version {version} of {model_name!r} at {path}')
  return path


def read_record(model_dir: str) -> Dict[str, Any]:
  with tf.io.gfile.GFile(os.path.join(model_dir, RECORD_FILE)) as f:
    return json.load(f)


def find_version(registry_dir: str, model_name: str,
                 model_uri: str) -> Optional[int]:
  """The newest version published from `model_uri`, if any."""
  for version in reversed(versions(registry_dir, model_name)):
    path = version_dir(registry_dir, model_name, version)
    if read_record(path).get(MODEL_URI_KEY) == model_uri:
      return version
  return None


def read_labels(model_dir: str) -> List[str]:
  with tf.io.gfile.GFile(os.path.join(model_dir, LABELS_FILE)) as f:
    return [line.rstrip('\n') for line in f]


def publish(saved_model_dir: str, registry_dir: str, model_name: str,
            class_names: List[str], record: Dict[str, Any],
            extra_files: Sequence[str] = ()) -> int:
  """Copies a SavedModel in as the next version; returns the version number.

  `extra_files` (e.g. a TFLite model) are copied into the version folder by
  their base names, before the SavedModel, so they are published with it.

  Locally, two concurrent publishers cannot take the same number: renaming
  onto an existing (non-empty) version folder fails, and the loser retries
  with the next number.
  """
  if not tf.io.gfile.exists(os.path.join(saved_model_dir, 'saved_model.pb')):
    raise FileNotFoundError(f'No SavedModel at {saved_model_dir}')
  model_dir = os.path.join(registry_dir, model_name)
  tf.io.gfile.makedirs(model_dir)
  version = (versions(registry_dir, model_name) or [0])[-1] + 1
  if _is_object_store(registry_dir):
    destination = os.path.join(model_dir, str(version))
    _write_version(saved_model_dir, destination, class_names, record, version,
                   extra_files)
    return version
  _remove_abandoned_staging(model_dir)
  staging = os.path.join(model_dir, f'{_STAGING_PREFIX}{uuid.uuid4().hex}')
  # Held while this publisher works: a killed publisher's lock is released by
  # the OS, which is how the next publish knows its staging folder is litter.
  with open(staging + _LOCK_SUFFIX, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      _write_version(saved_model_dir, staging, class_names, record, version,
                     extra_files)
      while True:
        try:
          os.rename(staging, os.path.join(model_dir, str(version)))
          return version
        except OSError:
          if not os.path.isdir(os.path.join(model_dir, str(version))):
            raise
          version += 1
          _write_record(staging, record, version)
    finally:
      if os.path.exists(staging):
        shutil.rmtree(staging)
      os.remove(staging + _LOCK_SUFFIX)


def _remove_abandoned_staging(model_dir: str) -> None:
  """Removes staging folders left by publishers that were killed (their lock is
  free), and lock-less ones older than an hour (left before locks existed)."""
  for name in os.listdir(model_dir):
    path = os.path.join(model_dir, name)
    if not name.startswith(_STAGING_PREFIX):
      continue
    if name.endswith(_LOCK_SUFFIX):
      with open(path, 'a') as lock:
        try:
          fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
          continue              # a live publisher
        shutil.rmtree(path[:-len(_LOCK_SUFFIX)], ignore_errors=True)
        os.remove(path)
      logging.info('Removed the staging folder of a killed publish: %s', path)
    elif (os.path.isdir(path) and not os.path.exists(path + _LOCK_SUFFIX)
          and time.time() - os.path.getmtime(path) > _ABANDONED_AFTER_SECONDS):
      shutil.rmtree(path, ignore_errors=True)
      logging.info('Removed an abandoned staging folder: %s', path)


def _is_object_store(path: str) -> bool:
  return '://' in path


def _write_version(saved_model_dir: str, destination: str, class_names: List[str],
                   record: Dict[str, Any], version: int,
                   extra_files: Sequence[str]) -> None:
  """Labels, record and extra files first, the SavedModel's files after,
  saved_model.pb last: a reader that finds saved_model.pb finds everything else too."""
  tf.io.gfile.makedirs(destination)
  with tf.io.gfile.GFile(os.path.join(destination, LABELS_FILE), 'w') as f:
    f.write(''.join(f'{name}\n' for name in class_names))
  _write_record(destination, record, version)
  for path in extra_files:
    tf.io.gfile.copy(path, os.path.join(destination, os.path.basename(path)),
                     overwrite=True)
  files = [os.path.relpath(os.path.join(directory, name), saved_model_dir)
           for directory, _, names in tf.io.gfile.walk(saved_model_dir)
           for name in names]
  for relative in sorted(files, key=lambda path: path == 'saved_model.pb'):
    target = os.path.join(destination, relative)
    tf.io.gfile.makedirs(posixpath.dirname(target))
    tf.io.gfile.copy(os.path.join(saved_model_dir, relative), target, overwrite=True)


def _write_record(destination: str, record: Dict[str, Any], version: int) -> None:
  with tf.io.gfile.GFile(os.path.join(destination, RECORD_FILE), 'w') as f:
    json.dump({**record, 'version': version}, f, indent=2, sort_keys=True)
