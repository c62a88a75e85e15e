"""The curated schema under schema/: reading its classes, deriving one for new data."""

import os
from typing import List

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components import label_schema



def load(schema_file: str) -> schema_pb2.Schema:
  with open(schema_file, encoding='utf-8') as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def class_names(schema_file: str) -> List[str]:
  """The label domain, in the order that defines class ids."""
  try:
    return label_schema.domain(load(schema_file))
  except ValueError as error:
    raise ValueError(f'{schema_file}: {error}') from None


def class_folders(data_dir: str) -> List[str]:
  """Class names of an image folder (`<class>/` or `train/<class>/`), sorted."""
  root = os.path.join(data_dir, 'train') if os.path.isdir(
      os.path.join(data_dir, 'train')) else data_dir
  return sorted(name for name in os.listdir(root)
                if os.path.isdir(os.path.join(root, name)) and not name.startswith('.'))


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
