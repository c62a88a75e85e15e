"""The run report: what a pipeline run did, as pictures and a model card.

    <output_dir>/reports/<run id>/report.html   self-contained (inline CSS, data: images)
                                  report.md     the same, linking the PNGs beside it
                                  *.png
    <output_dir>/reports/latest.html            a copy of the newest run's report.html

Three steps, one module each: `facts` gathers (MLMD through run_summary, and
the artifacts it points at; `scoring` re-scores the eval split), `sections`
says what the report shows (drawing its figures with `plots`, the model card
with `model_card`), `render` writes HTML and Markdown. See docs/report.md.
"""

import datetime
import logging
import os
import shutil
from typing import Optional

from pipeline.config import Config
from pipeline.run_summary import RunSummary

REPORTS_DIR = 'reports'
HTML_FILE, MARKDOWN_FILE, LATEST_FILE = 'report.html', 'report.md', 'latest.html'


def folder_name(run_id: str) -> str:
  """The run id as a portable folder name (timestamp ids hold ':')."""
  return ''.join(c if c.isalnum() or c in '._-' else '-' for c in run_id) or 'run'


def write_report(config: Config, summary: RunSummary,
                 reports_dir: Optional[str] = None) -> str:
  """Writes the report of the run `summary` describes; returns report.html's path.

  reports_dir defaults to `<output_dir>/reports`. Missing artifacts are listed
  in the report; any other error is raised.
  """
  # pylint: disable=g-import-not-at-top
  # TensorFlow's loader and matplotlib are imported only when a report is written.
  from pipeline.report import facts as facts_lib
  facts = facts_lib.gather(config, summary)
  if facts.missing:
    logging.warning('Run report: left out %s', '; '.join(facts.missing))
  return write(facts, reports_dir or os.path.join(config.pipeline.output_dir, REPORTS_DIR))


def write(facts, reports_dir: str) -> str:
  """Writes gathered `facts` (a facts.Facts) as a report under `reports_dir`."""
  from pipeline.report import render, sections as sections_lib  # pylint: disable=g-import-not-at-top
  run_dir = os.path.join(reports_dir, folder_name(facts.summary.run_id))
  os.makedirs(run_dir, exist_ok=True)
  sections = sections_lib.build(facts)
  title = sections_lib.title(facts)
  footer = (f'Written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} '
            'from the ML Metadata store and artifacts under '
            f'{facts.config["pipeline"]["output_dir"]}.')
  for figure in render.figures(sections):
    with open(os.path.join(run_dir, f'{figure.name}.png'), 'wb') as f:
      f.write(figure.png)
  with open(os.path.join(run_dir, MARKDOWN_FILE), 'w', encoding='utf-8') as f:
    f.write(render.to_markdown(title, sections, footer))
  html_path = os.path.join(run_dir, HTML_FILE)
  with open(html_path, 'w', encoding='utf-8') as f:
    f.write(render.to_html(title, sections, footer))
  shutil.copyfile(html_path, os.path.join(reports_dir, LATEST_FILE))
  return html_path


def write_report_logged(config: Config, summary: RunSummary) -> Optional[str]:
  """`write_report` for the runner: a failure is logged as an error, not raised,
  so a finished run (its model maybe pushed already) still returns its summary."""
  try:
    path = write_report(config, summary)
  except Exception:  # pylint: disable=broad-except
    logging.exception('The run report could not be written (the run itself is done)')
    return None
  logging.info('Run report: %s', path)
  return path
