"""The curated schema under schema/: reading its classes, deriving one for new
data, and the content-addressed copy a local run imports."""

import hashlib
import os
from typing import List, Tuple

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components import label_schema

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
    if feature.name == label_schema.LABEL_FEATURE:
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
