"""A tiny document model: what the report says, independent of its format.

`sections` builds the report as Sections of Blocks once; `render` writes that
same document as self-contained HTML and as Markdown with PNG files.
"""

import dataclasses
import math
from typing import List, Optional, Sequence, Union


@dataclasses.dataclass
class Paragraph:
  text: str
  lead: str = ''          # shown in bold before the text


@dataclasses.dataclass
class Banner:
  """The headline: the gate's decision."""
  kind: str               # 'good', 'bad' or 'neutral'
  title: str
  lines: Sequence[str] = ()


@dataclasses.dataclass
class Bullets:
  items: Sequence[str]


@dataclasses.dataclass
class Table:
  headers: Sequence[str]
  rows: Sequence[Sequence[str]]
  # Per row: '' or a status ('pass', 'fail', 'skip') that colors the row.
  row_status: Optional[Sequence[str]] = None


@dataclasses.dataclass
class Figure:
  name: str               # file stem of the PNG beside report.md
  png: bytes
  alt: str


@dataclasses.dataclass
class Code:
  text: str


Block = Union[Paragraph, Banner, Bullets, Table, Figure, Code]


@dataclasses.dataclass
class Section:
  title: str
  anchor: str
  blocks: List[Block]


def percent(value: Optional[float]) -> str:
  """A share as a percentage; 'n/a' when unknown (TFMA's precision of a class
  that was never predicted is NaN)."""
  return 'n/a' if value is None or math.isnan(value) else f'{value:.1%}'
