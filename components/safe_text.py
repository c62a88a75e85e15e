"""Text from the data (file and class names) made safe for files people open.

File and class names come from whoever fills the image folders. Written
verbatim into a CSV, a name like `=1+1.png` is a formula to a spreadsheet
(and `=HYPERLINK(...)` or `=cmd|...` worse); written into Markdown, `*`, `|`
or `<script>` become markup. Programs that read the real names get them from
the JSON outputs, which stay verbatim.
"""

import re

# OWASP's CSV-injection rule: cells starting with these start a formula.
_FORMULA_STARTS = ('=', '+', '-', '@', '\t', '\r')

# Inline Markdown markup anywhere in a line, backslash-escaped.
_MARKDOWN_INLINE = re.compile(r'([\\`*_\[\]|~])')
# Markup only at the start of a line: heading, list item, setext underline.
_MARKDOWN_LINE_START = re.compile(r'^(\s*)(#|[+=-](?=\s|$)|\d+[.)](?=\s|$))')
_HTML_ENTITIES = {'&': '&amp;', '<': '&lt;', '>': '&gt;'}


def spreadsheet_cell(value):
  """`value` as a CSV cell no spreadsheet reads as a formula: a string that
  would start one gets a leading single quote; anything else is unchanged."""
  if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
    return "'" + value
  return value


def spreadsheet_row(row):
  """A CSV row (a dict of cells) with every cell as `spreadsheet_cell`."""
  return {column: spreadsheet_cell(value) for column, value in row.items()}


def markdown(text: str) -> str:
  """`text` as literal Markdown on one line: HTML special characters as
  entities, inline markup characters and line-start markers escaped."""
  text = ''.join(_HTML_ENTITIES.get(char, char) for char in str(text))
  text = _MARKDOWN_INLINE.sub(r'\\\1', text.replace('\n', ' '))
  return _MARKDOWN_LINE_START.sub(
      lambda match: f'{match[1]}{match[2][:-1]}\\{match[2][-1]}', text)
