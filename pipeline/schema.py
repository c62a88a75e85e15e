"""The curated schema under schema/: reading its classes, deriving one for new
data, and the content-addressed copy a local run imports."""

import hashlib
import os
import sys
from typing import List, Tuple

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components import label_schema
from components.contracts import LABEL_FEATURE
from pipeline import config as config_lib

# Under pipeline.output_dir: <sha256 prefix>/schema.pbtxt, one folder per content.
PINNED_DIR = 'schemas'
PINNED_FILE = 'schema.pbtxt'


def load(schema_file: str) -> schema_pb2.Schema:
  with open(schema_file, encoding='utf-8') as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def class_names(schema_file: str) -> List[str]:
  """The label domain, in the order that defines class ids."""
  try:
    return label_schema.domain(load(schema_file))
  except ValueError as error:
    raise ValueError(f'{schema_file}: {error}') from None


def class_folders(data_dir: str) -> Tuple[List[str], List[str]]:
  """The classes of an image folder (`<class>/`, or `train/<class>/` with
  `eval/<class>/`), sorted, and the class folders left out because they hold
  no file at any depth: a class without images can only fail the data gate."""
  fixed_split = os.path.isdir(os.path.join(data_dir, 'train'))
  root = os.path.join(data_dir, 'train') if fixed_split else data_dir
  names = sorted(name for name in os.listdir(root)
                 if os.path.isdir(os.path.join(root, name)) and not name.startswith('.'))
  roots = [root, os.path.join(data_dir, 'eval')] if fixed_split else [root]
  empty = [name for name in names
           if not any(_holds_a_file(os.path.join(top, name)) for top in roots)]
  return [name for name in names if name not in empty], empty


def _holds_a_file(folder: str) -> bool:
  """Whether `folder` holds a file that is not hidden, at any depth. Folder
  symlinks are followed, each real folder once, so a link loop ends."""
  seen, pending = set(), [folder]
  while pending:
    top = pending.pop()
    real = os.path.realpath(top)
    if real in seen:
      continue
    seen.add(real)
    try:
      entries = list(os.scandir(top))
    except OSError:
      continue
    for entry in entries:
      if entry.name.startswith('.'):
        continue
      if entry.is_dir():
        pending.append(entry.path)
      elif entry.is_file():
        return True
  return False


def derive(template_file: str, classes: List[str]) -> str:
  """The template schema with its label domain replaced by `classes`."""
  if len(classes) < 2:
    raise ValueError(f'A classifier needs at least two classes, got {classes}')
  schema = load(template_file)
  for feature in schema.feature:
    if feature.name == LABEL_FEATURE:
      del feature.string_domain.value[:]
      feature.string_domain.value.extend(classes)
  return text_format.MessageToString(schema)


def pin(text: str, output_dir: str) -> str:
  """Writes schema `text` to `<output_dir>/schemas/<sha256 prefix>/schema.pbtxt`
  (once) and returns that path.

  TFX caches ImportSchemaGen on its `schema_file` path, not on the file's
  content: a schema edited in place would be served stale from the cache.
  A path that changes with the content makes every new schema a new input.
  """
  digest = hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]
  path = os.path.join(output_dir, PINNED_DIR, digest, PINNED_FILE)
  if not os.path.isfile(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f'{path}.{os.getpid()}.tmp'
    with open(temporary, 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(temporary, path)   # a concurrent reader sees the whole file or none
  return path


def pin_file(schema_file: str, output_dir: str) -> str:
  """`pin` of the schema file's content."""
  with open(schema_file, encoding='utf-8') as f:
    return pin(f.read(), output_dir)


def report_empty_class_folders(empty_folders: List[str]) -> None:
  if empty_folders:
    print('Empty class folder(s) left out of the schema (no file at any depth): '
          f'{", ".join(empty_folders)}', file=sys.stderr)


def with_derived_schema(config: config_lib.Config) -> config_lib.Config:
  """`config` reading a schema derived from its class
  folders, written beside the run's outputs (`pin`), for a run given `--data`
  and no schema; says so on stderr."""
  classes, empty = class_folders(config.data.path)
  report_empty_class_folders(empty)
  path = pin(derive(config_lib.DataConfig.schema_file, classes), config.pipeline.output_dir)
  print(f'Schema derived from the {len(classes)} class folders of {config.data.path}: '
        f'{path}; to pin these class ids, run with --set data.schema_file={path}',
        file=sys.stderr)
  return config.with_schema_file(path)
