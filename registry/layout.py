"""The registry's layout on disk, in the folders TF Serving watches, and its
readers.

    <registry>/<model name>/<version>/saved_model.pb, variables/, assets/ ...
                                      labels.txt          class names, one per line, in id order
                                      model_record.json   metrics, data fingerprint, pipeline run
                                      model.tflite        the model for edge runtimes (pusher)
                                      PUBLISHED           completion marker, written last
    <registry>/<model name>/aliases/<alias>.json          aliases.py

Versions are integers (ASCII digits) that only grow. Every reader sees only
published versions, and `is_published` is the one place that decides what
is: locally every version folder (it appeared by an atomic rename,
publishing.py), in an object store only one with its completion marker.

Local files are read without TensorFlow, so the CLI and a local publisher
start in a fraction of a second; object stores (gs://, s3://) go through
tf.io.gfile.
"""

import json
import os
import re
import shutil
from typing import Any, Dict, List, Optional

from components import contracts

LABELS_FILE = 'labels.txt'
RECORD_FILE = 'model_record.json'
PUBLISHED_FILE = 'PUBLISHED'
CLAIM_FILE = 'CLAIM'
# Record key naming the Trainer output a version was copied from.
MODEL_URI_KEY = 'model_artifact_uri'
_VERSION_PATTERN = re.compile(r'[0-9]+')
_MODEL_NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,127}')


def gfile():
  """tf.io.gfile, imported on first use: only object stores need it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


class _LocalFiles:
  """The tf.io.gfile calls the registry makes, on local paths without TensorFlow."""
  exists = staticmethod(os.path.exists)
  isdir = staticmethod(os.path.isdir)
  listdir = staticmethod(os.listdir)
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
  return gfile() if any(map(contracts.is_remote, paths)) else _LocalFiles


def isdir(path: str) -> bool:
  return files_for(path).isdir(path)


def listdir(path: str) -> List[str]:
  """Names in a folder (none when it is missing), locally or in an object store."""
  files_io = files_for(path)
  if not files_io.isdir(path):
    return []
  return [name.rstrip('/') for name in files_io.listdir(path)]


def open_text(path: str, mode: str = 'r'):
  """A registry text file (record, labels, alias)."""
  return files_for(path).GFile(path, mode)


def validate_model_name(model_name: str) -> str:
  """Model names are one folder inside the registry: never `..`, `/` or hidden."""
  if not isinstance(model_name, str) or not _MODEL_NAME_PATTERN.fullmatch(
      model_name) or model_name in ('.', '..'):
    raise ValueError(f'Invalid model name {model_name!r}: use a letter or digit '
                     'followed by up to 127 letters, digits, ., - or _')
  return model_name


def is_version_number(text: str) -> bool:
  """Versions are ASCII digits only (str.isdigit also accepts '²')."""
  return isinstance(text, str) and bool(_VERSION_PATTERN.fullmatch(text))


def numbers_in_use(model_dir: str) -> List[int]:
  """Every version number taken, published or not, ascending."""
  return sorted(int(name) for name in listdir(model_dir) if is_version_number(name))


def is_published(registry_dir: str, model_name: str, version: int) -> bool:
  """Locally every version folder is complete (it appeared by rename); in an
  object store only one with its completion marker."""
  path = os.path.join(registry_dir, validate_model_name(model_name), str(version))
  if contracts.is_remote(path):
    return gfile().exists(os.path.join(path, PUBLISHED_FILE))
  return os.path.isdir(path)


def versions(registry_dir: str, model_name: str) -> List[int]:
  """Published versions of a model, oldest first."""
  model_dir = os.path.join(registry_dir, validate_model_name(model_name))
  return [version for version in numbers_in_use(model_dir)
          if is_published(registry_dir, model_name, version)]


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


def read_labels(model_dir: str) -> List[str]:
  with open_text(os.path.join(model_dir, LABELS_FILE)) as f:
    return [line.rstrip('\n') for line in f]


def find_version(registry_dir: str, model_name: str,
                 model_uri: str) -> Optional[int]:
  """The newest published version copied from `model_uri`, if any."""
  for version in reversed(versions(registry_dir, model_name)):
    path = os.path.join(registry_dir, model_name, str(version))
    if read_record(path).get(MODEL_URI_KEY) == model_uri:
      return version
  return None
