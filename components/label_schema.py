"""The schema's classes: the `label` feature's string domain.

Apart from components/example_splits.py, which counts images per class with
TensorFlow, so that reading a schema (`pipeline schema`, the configuration)
never imports TensorFlow.
"""

from typing import List

from tensorflow_metadata.proto.v0 import schema_pb2

from components.contracts import LABEL_FEATURE


def domain(schema: schema_pb2.Schema) -> List[str]:
  """The schema's classes: the `label` feature's string domain, in id order."""
  for feature in schema.feature:
    if feature.name == LABEL_FEATURE:
      if feature.HasField('string_domain'):
        return list(feature.string_domain.value)
      for string_domain in schema.string_domain:
        if string_domain.name == (feature.domain or LABEL_FEATURE):
          return list(string_domain.value)
  raise ValueError(f'The schema has no string domain for feature {LABEL_FEATURE!r}')
