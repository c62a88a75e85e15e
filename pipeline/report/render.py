"""Writes the report document as one self-contained HTML page (inline CSS,
figures as data: URIs) or as Markdown that links PNG files beside it."""

import base64
import html
import re
from typing import Iterable, List

from components import safe_text
from pipeline.report.document import (Banner, Block, Bullets, Code, Figure,
                                      Paragraph, Section, Table)

_CSS = """
body { font: 15px/1.45 -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif;
       color: #222; max-width: 1060px; margin: 0 auto; padding: 1em 1.5em 4em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { border-bottom: 2px solid #e4e4e4; padding-bottom: .2em; margin-top: 2em; }
nav { font-size: .9em; margin: .5em 0 1em; }
nav a { margin-right: .9em; color: #1f5fa8; text-decoration: none; }
.banner { border-radius: 6px; padding: .8em 1.1em; margin: 1em 0; border-left: 8px solid; }
.banner strong { font-size: 1.3em; display: block; }
.banner ul { margin: .4em 0 0; padding-left: 1.2em; }
.good { background: #e8f6ea; border-color: #2ca02c; }
.bad { background: #fdecea; border-color: #d62728; }
.neutral { background: #f1f1f1; border-color: #7f7f7f; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f6f6f6; }
tr.pass td { background: #eef8ef; }
tr.fail td { background: #fdeeee; }
tr.skip td { color: #777; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
footer { color: #888; font-size: .85em; margin-top: 3em; }
"""


def data_uri(png: bytes) -> str:
  return 'data:image/png;base64,' + base64.b64encode(png).decode('ascii')


def _html_block(block: Block) -> str:
  e = html.escape
  if isinstance(block, Paragraph):
    lead = f'<strong>{e(block.lead)}</strong> ' if block.lead else ''
    return f'<p>{lead}{e(block.text)}</p>'
  if isinstance(block, Banner):
    lines = ''.join(f'<li>{e(line)}</li>' for line in block.lines if line)
    return (f'<div class="banner {e(block.kind)}"><strong>{e(block.title)}</strong>'
            + (f'<ul>{lines}</ul>' if lines else '') + '</div>')
  if isinstance(block, Bullets):
    return '<ul>' + ''.join(f'<li>{e(item)}</li>' for item in block.items) + '</ul>'
  if isinstance(block, Table):
    status = block.row_status or [''] * len(block.rows)
    head = ('<tr>' + ''.join(f'<th>{e(h)}</th>' for h in block.headers) + '</tr>'
            if any(block.headers) else '')
    rows = ''.join(
        (f'<tr class="{e(s)}">' if s else '<tr>') +
        ''.join(f'<td>{e(cell)}</td>' for cell in row) + '</tr>'
        for row, s in zip(block.rows, status))
    return f'<table>{head}{rows}</table>'
  if isinstance(block, Figure):
    return f'<img src="{data_uri(block.png)}" alt="{e(block.alt)}" title="{e(block.alt)}">'
  if isinstance(block, Code):
    return f'<pre>{e(block.text)}</pre>'
  raise TypeError(f'unknown block {type(block).__name__}')


def to_html(title: str, sections: List[Section], footer: str) -> str:
  e = html.escape
  nav = ''.join(f'<a href="#{e(s.anchor)}">{e(s.title)}</a>' for s in sections)
  body = ''.join(
      f'<section id="{e(s.anchor)}"><h2>{e(s.title)}</h2>' +
      '\n'.join(_html_block(block) for block in s.blocks) + '</section>\n'
      for s in sections)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">'
          f'<title>{e(title)}</title><style>{_CSS}</style></head>\n<body>'
          f'<h1>{e(title)}</h1><nav>{nav}</nav>\n{body}'
          f'<footer>{e(footer)}</footer></body></html>\n')


def _md_cell(text: str) -> str:
  return safe_text.markdown(text) or ' '


def _md_fence(text: str) -> str:
  """A code fence longer than any run of backticks in `text`, so a name in it
  cannot close the block."""
  return '`' * max([3] + [len(run) + 1 for run in re.findall('`+', text)])


def _md_block(block: Block) -> Iterable[str]:
  if isinstance(block, Paragraph):
    lead = f'**{safe_text.markdown(block.lead)}** ' if block.lead else ''
    yield lead + safe_text.markdown(block.text)
  elif isinstance(block, Banner):
    yield f'> **{safe_text.markdown(block.title)}**'
    for line in block.lines:
      if line:
        yield f'> - {safe_text.markdown(line)}'
  elif isinstance(block, Bullets):
    for item in block.items:
      yield f'- {safe_text.markdown(item)}'
  elif isinstance(block, Table):
    headers = list(block.headers) if any(block.headers) else [' '] * len(block.headers)
    yield '| ' + ' | '.join(_md_cell(h) for h in headers) + ' |'
    yield '|' + '---|' * len(headers)
    for row in block.rows:
      yield '| ' + ' | '.join(_md_cell(cell) for cell in row) + ' |'
  elif isinstance(block, Figure):
    yield f'![{safe_text.markdown(block.alt)}]({block.name}.png)'
  elif isinstance(block, Code):
    fence = _md_fence(block.text)
    yield from (fence, block.text, fence)
  else:
    raise TypeError(f'unknown block {type(block).__name__}')


def to_markdown(title: str, sections: List[Section], footer: str) -> str:
  """Markdown; every Figure is expected as `<name>.png` next to the file."""
  lines = [f'# {safe_text.markdown(title)}', '',
           ' · '.join(f'[{safe_text.markdown(s.title)}](#{s.anchor})' for s in sections), '']
  for section in sections:
    lines += [f'<a id="{section.anchor}"></a>', f'## {safe_text.markdown(section.title)}', '']
    for block in section.blocks:
      lines += [*_md_block(block), '']
  lines.append(f'_{safe_text.markdown(footer)}_')
  return '\n'.join(lines) + '\n'


def figures(sections: List[Section]) -> List[Figure]:
  return [block for s in sections for block in s.blocks if isinstance(block, Figure)]
