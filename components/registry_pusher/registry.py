"""The versioned model registry on disk, in the layout TF Serving watches.

    <registry>/<model name>/<version>/saved_model.pb, variables/, assets/ ...
                                      labels.txt          class names, one per line, in id order
                                      model_record.json   metrics, data fingerprint, pipeline run

Versions are integers that only grow. A version is assembled in a hidden
staging folder and published with one atomic rename, so a reader (TF Serving
polls for integer folder names) never sees a half-written version; TF Serving
ignores the hidden staging folders.
"""

import json
import os
import shutil
import uuid
from typing import Any, Dict, List, Optional

LABELS_FILE = 'labels.txt'
RECORD_FILE = 'model_record.json'
_STAGING_PREFIX = '.staging-'
# Record key naming the Trainer output a version was copied from.
MODEL_URI_KEY = 'model_artifact_uri'


def versions(registry_dir: str, model_name: str) -> List[int]:
  """Published versions of a model, oldest first."""
  model_dir = os.path.join(registry_dir, model_name)
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(name) for name in os.listdir(model_dir) if name.isdigit())


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
  if not os.path.isdir(path):
    raise FileNotFoundError(f'No version {version} of {model_name!r} at {path}')
  return path


def read_record(model_dir: str) -> Dict[str, Any]:
  with open(os.path.join(model_dir, RECORD_FILE), encoding='utf-8') as f:
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
  with open(os.path.join(model_dir, LABELS_FILE), encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


def publish(saved_model_dir: str, registry_dir: str, model_name: str,
            class_names: List[str], record: Dict[str, Any]) -> int:
  """Copies a SavedModel in as the next version; returns the version number.

  Two concurrent publishers cannot take the same number: renaming onto an
  existing (non-empty) version folder fails, and the loser retries with the
  next number.
  """
  model_dir = os.path.join(registry_dir, model_name)
  os.makedirs(model_dir, exist_ok=True)
  staging = os.path.join(model_dir, f'{_STAGING_PREFIX}{uuid.uuid4().hex}')
  try:
    shutil.copytree(saved_model_dir, staging)
    with open(os.path.join(staging, LABELS_FILE), 'w', encoding='utf-8') as f:
      f.write(''.join(f'{name}\n' for name in class_names))
    version = (versions(registry_dir, model_name) or [0])[-1] + 1
    while True:
      with open(os.path.join(staging, RECORD_FILE), 'w', encoding='utf-8') as f:
        json.dump({**record, 'version': version}, f, indent=2, sort_keys=True)
      try:
        os.rename(staging, os.path.join(model_dir, str(version)))
        return version
      except OSError:
        if not os.path.isdir(os.path.join(model_dir, str(version))):
          raise
        version += 1
  finally:
    shutil.rmtree(staging, ignore_errors=True)
