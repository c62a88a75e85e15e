"""The fenced code blocks of docs/serving.md, so tests run what the docs show."""

import os
import re
from typing import Any, Dict, List

from helpers import REPO_ROOT

SERVING_DOC = os.path.join(REPO_ROOT, 'docs', 'serving.md')


def read_doc() -> str:
  with open(SERVING_DOC, encoding='utf-8') as f:
    return f.read()


def blocks(language: str) -> List[str]:
  """The contents of every ```<language> block, in order."""
  return re.findall(rf'^```{language}\n(.*?)^```$', read_doc(), re.M | re.S)


def python_function(name: str) -> Any:
  """Runs the ```python block that defines `name` and returns that function."""
  (source,) = [block for block in blocks('python') if f'def {name}(' in block]
  namespace: Dict[str, Any] = {}
  exec(compile(source, f'{SERVING_DOC}:{name}', 'exec'), namespace)  # pylint: disable=exec-used
  return namespace[name]
