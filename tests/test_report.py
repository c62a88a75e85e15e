"""The run report (pipeline/report/) on the shared end-to-end run's real outputs.

The session's first run (tests/conftest.py) is read only: reports are written
to tmp folders; the report the run wrote itself is only read.
"""

import base64
import contextlib
import dataclasses
import html.parser
import io
import logging
import os
import re
import sqlite3

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components import contracts
from components import example_splits
from models import preprocessing
from models import signatures
from models.trainer import calibration
from pipeline import config as config_lib, report, run_summary, runner
from pipeline.report import facts as facts_lib, plots, render, scoring, sections
from pipeline.report.document import (Banner, Bullets, Code, Figure, Paragraph,
                                      Section, Table)
from registry import layout

from helpers import sample_bytes

SECTION_IDS = ['summary', 'evaluation', 'data', 'data-quality', 'training', 'more-labels',
               'per-class', 'confusion-matrix', 'trust', 'mistakes', 'where-the-model-looked',
               'edge-exports',
               'components', 'anomalies', 'model-card', 'configuration']


class _Page(html.parser.HTMLParser):
  """Collects every URL-bearing attribute, section ids and table rows."""

  def __init__(self):
    super().__init__()
    self.urls, self.images, self.ids, self.tags = [], [], [], set()
    self.rows_by_section = {}
    self._section, self._row, self._cell = None, None, None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.tags.add(tag)
    for name in ('src', 'href', 'srcset', 'action', 'data'):
      if name in attrs:
        self.urls.append(attrs[name])
    if tag == 'img':
      self.images.append(attrs['src'])
    if tag == 'section':
      self._section = attrs['id']
      self.ids.append(attrs['id'])
    elif tag == 'tr':
      self._row = []
    elif tag == 'td':
      self._cell = ''

  def handle_data(self, data):
    if self._cell is not None:
      self._cell += data

  def handle_endtag(self, tag):
    if tag == 'td':
      self._row.append(self._cell)
      self._cell = None
    elif tag == 'tr' and self._row:
      self.rows_by_section.setdefault(self._section, []).append(self._row)
      self._row = None


def _parse(page: str) -> _Page:
  parser = _Page()
  parser.feed(page)
  return parser


def _is_png(data: bytes) -> bool:
  with Image.open(io.BytesIO(data)) as image:
    image.verify()
    return image.format == 'PNG'


@pytest.fixture(scope='module')
def config(e2e_workspace):
  return config_lib.load_config(None, e2e_workspace['overrides'])


@pytest.fixture(scope='module')
def facts(config, e2e_first_run):
  return facts_lib.gather(config, e2e_first_run)


@pytest.fixture(scope='module')
def written(facts, tmp_path_factory):
  """(report.html path, its text) written from the first run's facts."""
  path = report.write(facts, str(tmp_path_factory.mktemp('reports')))
  with open(path, encoding='utf-8') as f:
    return path, f.read()


def test_the_run_writes_its_report_and_names_it_in_the_summary(e2e_first_run, e2e_workspace):
  path = e2e_first_run.report_path
  reports = os.path.join(e2e_workspace['output_dir'], report.REPORTS_DIR)
  assert path == os.path.join(reports, report.folder_name(e2e_first_run.run_id),
                              report.HTML_FILE)
  with open(path, encoding='utf-8') as f:
    assert 'id="missing"' not in f.read()     # every fact was found
  assert os.path.isfile(os.path.join(os.path.dirname(path), report.MARKDOWN_FILE))
  assert os.path.isfile(os.path.join(reports, report.LATEST_FILE))
  assert ':' not in os.path.basename(os.path.dirname(path))
  assert run_summary.format_summary(e2e_first_run).splitlines()[-1] == f'Report: {path}'


def test_html_is_self_contained_with_every_section(written, e2e_first_run):
  _, page = written
  parsed = _parse(page)
  assert parsed.ids == SECTION_IDS
  assert not parsed.tags & {'script', 'link', 'iframe', 'object', 'embed'}
  assert 'url(' not in page and '@import' not in page
  assert all(url.startswith(('data:image/png;base64,', '#')) for url in parsed.urls)
  assert not re.search(r'https?://', page)
  assert len(parsed.images) >= 5      # gate, data, training, per class, confusion
  for src in parsed.images:
    assert _is_png(base64.b64decode(src.split(',', 1)[1]))


def test_headline_states_the_decision_accuracy_and_version(written, e2e_first_run):
  _, page = written
  evaluation = e2e_first_run.evaluation
  headline = page[page.index('class="banner'):page.index('</div>')]
  assert 'BLESSED: pushed as version 1' in headline
  assert f'{evaluation["accuracy"]:.1%}' in headline
  assert f'on {evaluation["example_count"]} images' in headline
  # The gate's rule lines: the absolute bound passed, no baseline on a first run.
  rows = _parse(page).rows_by_section['evaluation']
  assert rows[0][0].startswith('accuracy >= 0.6000') and rows[0][1] == 'PASS'
  assert rows[1][1] == 'not applied'


def test_facts_agree_with_the_evaluator(facts, e2e_first_run):
  evaluation = e2e_first_run.evaluation
  matrix = evaluation['confusion_matrix']
  assert sum(map(sum, matrix)) == evaluation['example_count']
  # The eval split scored again by the candidate model gives TFMA's numbers.
  assert facts.scoring.examples == evaluation['example_count']
  assert facts.scoring.confusion_matrix == matrix
  assert facts.scoring.accuracy == pytest.approx(evaluation['accuracy'], abs=1e-6)
  assert all(m.true_label != m.predicted for m in facts.scoring.mistakes)
  assert sum(facts.split_counts['eval'].values()) == evaluation['example_count']
  # The first right eval image of each class, with its Grad-CAM heatmap.
  samples = facts.scoring.class_samples
  assert [s.true_label for s in samples] == [s.predicted for s in samples] == [
      name for i, name in enumerate(facts.class_names) if matrix[i][i]]
  for sample in samples + facts.scoring.mistakes:
    assert sample.heatmap.shape == (2, 2)       # the 64-px model's feature map
    assert sample.heatmap.min() >= 0 and sample.heatmap.max() == pytest.approx(1)
  assert list(facts.split_counts) == ['train', 'eval']
  assert facts.fixed_split is False     # ExampleGen's input_config: one 'all' split
  assert list(facts.split_counts['train'].items()) == [
      ('trouser', 12), ('bag', 12), ('sneaker', 12)]       # in class id order
  head = facts.history['head']
  assert head['regularization']['chosen'] in head['regularization']['grid']
  assert head['unlabeled']['images'] == 24 and 'reason' in head['unlabeled']
  assert head['learning_curve']['points']
  low, high = facts.accuracy_interval
  assert low < evaluation['accuracy'] <= high
  assert facts.missing == []


def test_trust_section_measures_calibration_and_unknowns_on_the_eval_split(written, facts):
  _, page = written
  section = page[page.index('id="trust"'):page.index('id="mistakes"')]
  scored = facts.scoring
  assert scored.probabilities.shape == (scored.examples, len(facts.class_names))
  assert scored.unknown is not None and len(scored.unknown) == scored.examples
  temperature = facts.history['head']['calibration']['temperature']
  before = calibration.rescale(scored.probabilities, 1 / temperature)
  errors = [calibration.expected_calibration_error(p, scored.label_ids)
            for p in (before, scored.probabilities)]
  assert (f'Expected calibration error on {scored.examples} eval images: '
          f'{errors[0]:.4f} before, {errors[1]:.4f} after') in section
  assert f'Temperature {temperature:.3f}' in section
  assert (f'{int(scored.unknown.sum())} of {scored.examples} images') in section
  assert 'alt="Reliability on the eval split' in section


def test_per_class_metrics_are_the_confusion_matrix_at_the_top_class(e2e_first_run):
  evaluation = e2e_first_run.evaluation
  matrix = evaluation['confusion_matrix']
  for i, (name, metrics) in enumerate(evaluation['per_class'].items()):
    predicted = sum(row[i] for row in matrix)
    assert metrics['recall'] == pytest.approx(matrix[i][i] / sum(matrix[i])), name
    if predicted:
      assert metrics['precision'] == pytest.approx(matrix[i][i] / predicted), name


def test_grad_cam_section_shows_one_overlay_per_class(written, facts):
  parsed = _parse(written[1])
  rows = parsed.rows_by_section['where-the-model-looked']
  assert [row[0] for row in rows] == [s.true_label for s in facts.scoring.class_samples]
  assert [row[2] for row in rows] == [s.source_path for s in facts.scoring.class_samples]
  with open(os.path.join(os.path.dirname(written[0]), 'class_samples_gradcam.png'),
            'rb') as f:
    assert _is_png(f.read())


def test_per_class_table_counts_sum_to_the_example_count(written, e2e_first_run):
  rows = _parse(written[1]).rows_by_section['per-class']
  assert sum(int(row[3]) for row in rows) == e2e_first_run.evaluation['example_count']


def test_edge_exports_table_shows_the_pushed_versions_tflite_models(written, e2e_first_run):
  _, page = written
  models = layout.read_record(e2e_first_run.pushed_to)['exports']['models']
  rows = _parse(page).rows_by_section['edge-exports']
  assert [row[:2] for row in rows] == [[name, model['kind']] for name, model in models.items()]
  assert [row[3] for row in rows] == [f'{model["accuracy"]:.1%}' for model in models.values()]
  assert [row[4] for row in rows] == [f'{-model["drop"] * 100:+.2f}' for model in models.values()]
  assert [row[5] for row in rows] == ['yes' if model['published'] else 'no'
                                     for model in models.values()]


def test_markdown_links_existing_png_files(written):
  folder = os.path.dirname(written[0])
  with open(os.path.join(folder, report.MARKDOWN_FILE), encoding='utf-8') as f:
    markdown = f.read()
  links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', markdown)
  assert {'learning_curve.png', 'confusion_matrix.png', 'per_class.png',
          'images_per_class.png', 'accuracy_gate.png',
          'class_samples_gradcam.png'} <= set(links)
  for link in links:
    with open(os.path.join(folder, link), 'rb') as f:
      assert _is_png(f.read())
  for anchor in SECTION_IDS:
    assert f'<a id="{anchor}"></a>' in markdown
  assert '> **BLESSED: pushed as version 1' in markdown


def test_gallery_shows_the_most_confident_wrong_predictions(e2e_first_run, tmp_path):
  """The eval split with every label rotated to another class: the model's
  confident right answers become confident mistakes."""
  class_names = list(e2e_first_run.evaluation['per_class'])
  relabeled = str(tmp_path / 'relabeled.gz')
  files = example_splits.split_files(e2e_first_run.examples_uri, contracts.EVAL_SPLIT)
  with tf.io.TFRecordWriter(relabeled, 'GZIP') as writer:
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
      example = tf.train.Example.FromString(record.numpy())
      label = example.features.feature[preprocessing.LABEL_KEY].bytes_list
      label.value[0] = class_names[(class_names.index(label.value[0].decode()) + 1)
                                   % len(class_names)].encode()
      writer.write(example.SerializeToString())
  model_dir = os.path.join(e2e_first_run.model_uri, 'Format-Serving')
  with signatures.loaded_session(model_dir) as model:
    scored = scoring.explain(model, scoring.score_split(
        model, [relabeled], class_names, top_n=4), image_size=64)
  assert len(scored.mistakes) == 4
  assert scored.examples - scored.correct >= 4
  assert all(m.true_label != m.predicted for m in scored.mistakes)
  probabilities = [m.probability for m in scored.mistakes]
  assert probabilities == sorted(probabilities, reverse=True)
  assert all(plots.thumbnail(m.image).ndim == 3 for m in scored.mistakes)
  section = sections.mistakes_section(dataclasses.replace(
      _minimal_facts(e2e_first_run), scoring=scored))
  table = next(b for b in section.blocks if isinstance(b, Table))
  assert [row[1:3] for row in table.rows] == [[m.true_label, m.predicted]
                                             for m in scored.mistakes]
  figures = [b for b in section.blocks if isinstance(b, Figure)]
  assert [figure.name for figure in figures] == ['mistakes', 'mistakes_gradcam']
  assert all(_is_png(figure.png) for figure in figures)
  # The overlays are the mistakes' images under their heatmaps.
  assert figures[0].png != figures[1].png
  assert all(m.heatmap.shape == (2, 2) for m in scored.mistakes)


def test_a_model_without_explain_pixels_leaves_the_heatmaps_out(e2e_first_run, tmp_path):
  """A model exported before Grad-CAM: `explain` names the missing signature
  (a missing fact in `gather`), and the section says there are no heatmaps."""
  module = tf.Module()
  module.serve = tf.function(lambda x: {'y': x},
                             input_signature=[tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, str(tmp_path), signatures={'serving_default': module.serve})
  image = scoring.ScoredImage('bag', 'bag', 0.9, 'bag/1.png', sample_bytes('bag', 0))
  scored = scoring.Scoring(examples=1, correct=1, confusion_matrix=[[1]], mistakes=[],
                           probabilities=np.array([[1.0]]), label_ids=np.array([0]),
                           unknown=None, class_samples=[image])
  with signatures.loaded_session(str(tmp_path)) as model, pytest.raises(
      KeyError, match="no 'explain_pixels' signature"):
    scoring.explain(model, scored, image_size=64)
  section = sections.explanations_section(dataclasses.replace(
      _minimal_facts(e2e_first_run), scoring=scored))
  assert [type(block) for block in section.blocks] == [Paragraph]
  assert section.blocks[0].text.startswith('No heatmaps')


def _minimal_facts(summary):
  return facts_lib.Facts(
      summary=summary, config={}, started='', decision=facts_lib.decision(summary),
      class_names=[], intended_classes=[], image_size=64, fixed_split=False,
      split_counts={}, counts_source='', quarantine=[], history=None, checks=[],
      accuracy_interval=None, baseline_version=None, scoring=None)


def test_not_blessed_report_puts_the_failures_first(facts, config):
  evaluation = {**facts.evaluation, 'accuracy': 0.5, 'blessed': False,
                'baseline_accuracy': 0.9}
  summary = dataclasses.replace(facts.summary, blessed=False, pushed_version=None,
                                pushed_to=None, evaluation=evaluation)
  refused = dataclasses.replace(
      facts, summary=summary, decision=facts_lib.decision(summary),
      accuracy_interval=facts_lib.wilson_interval(4, 8),
      checks=facts_lib.threshold_checks(evaluation, config.evaluation.min_accuracy,
                                        config.evaluation.max_accuracy_drop))
  page = render.to_html('t', sections.build(refused), '')
  headline = page[page.index('class="banner'):page.index('</div>')]
  assert 'NOT BLESSED: nothing was pushed' in headline
  assert 'Failed: accuracy &gt;= 0.6000' in headline
  assert 'Failed: accuracy &gt;= baseline 0.9000 - 0.0500 = 0.8500' in headline
  assert [row[1] for row in _parse(page).rows_by_section['evaluation']] == ['FAIL', 'FAIL']


def test_run_stopped_before_the_evaluator_still_renders(facts):
  summary = dataclasses.replace(
      facts.summary, blessed=None, evaluation={}, pushed_version=None, pushed_to=None,
      components=[dataclasses.replace(facts.summary.components[0], state='FAILED')])
  stopped = dataclasses.replace(facts, summary=summary, decision=facts_lib.decision(summary),
                                checks=[], accuracy_interval=None, scoring=None)
  page = render.to_html('t', sections.build(stopped), '')
  headline = page[page.index('class="banner'):page.index('</div>')]
  assert 'NOT EVALUATED' in headline and 'FAILED' in headline
  assert _parse(page).ids == SECTION_IDS


def test_missing_artifacts_are_listed_not_fatal(config, e2e_first_run, tmp_path):
  summary = dataclasses.replace(
      e2e_first_run, model_uri=str(tmp_path / 'no_model'), statistics_uri=None,
      quarantine_report=str(tmp_path / 'no_quarantine.jsonl'))
  path = report.write_report(config, summary, str(tmp_path / 'reports'))
  with open(path, encoding='utf-8') as f:
    page = f.read()
  assert 'id="missing"' in page
  assert 'training history' in page and 'eval split scoring' in page
  # Without statistics, images per class are counted from the examples.
  assert 'Counted from the examples' in page


def test_runner_logs_a_report_failure_and_keeps_the_summary(
    e2e_workspace, e2e_first_run, monkeypatch, tmp_path, caplog):
  """`runner.run_local` on a copy of the first run's store, its DAG runner
  standing in for the run already done: the report failure is logged, and the
  summary of the run is still returned (for the CLI to print)."""
  del e2e_first_run  # Its store, copied below.
  output_dir = tmp_path / 'outputs'
  output_dir.mkdir()
  with contextlib.closing(sqlite3.connect(os.path.join(
      e2e_workspace['output_dir'], 'metadata.sqlite'))) as source, \
      contextlib.closing(sqlite3.connect(output_dir / 'metadata.sqlite')) as copy:
    source.backup(copy)
  config = config_lib.load_config(
      None, [*e2e_workspace['overrides'], f'pipeline.output_dir={output_dir}'])
  expected = run_summary.summarize(config.pipeline.metadata_path)

  dag_runs = []

  class AlreadyRan:
    def run(self, pipeline):
      dag_runs.append(pipeline)

  def broken(*_):
    raise RuntimeError('plotting exploded')
  monkeypatch.setattr(runner, 'BeamDagRunner', AlreadyRan)
  monkeypatch.setattr(facts_lib, 'gather', broken)
  with pytest.raises(RuntimeError):       # called directly, errors are raised
    report.write_report(config, expected, str(tmp_path / 'direct'))
  caplog.set_level(logging.ERROR)
  summary = runner.run_local(config, 'beam')
  assert len(dag_runs) == 1
  assert summary == expected and summary.report_path is None
  assert expected.components
  failures = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
  assert [str(r.exc_info[1]) for r in failures] == ['plotting exploded']
  assert 'report could not be written' in failures[0].getMessage()
  assert not os.path.exists(output_dir / report.REPORTS_DIR)


def test_markdown_and_html_show_hostile_names_as_text():
  """A class named `a|b*c_d` and a file `<script>alert(1)</script>.png` in
  every kind of block, rendered by a CommonMark parser (markdown-it, with
  tables): no tag, emphasis, link, heading or extra table cell comes from
  them; the HTML report escapes them too."""
  from markdown_it import MarkdownIt  # pylint: disable=g-import-not-at-top
  name, file = 'a|b*c_d', '<script>alert(1)</script>.png'
  section = Section('Data', 'data', [
      Paragraph(f'Quarantined {file}', lead=name),
      Banner('bad', name, [file, '[click](javascript:alert(1))']),
      Bullets([file, '# not a heading', '- not a list']),
      Table(['class', 'file'], [[name, file]]),
      Code('```\n' + name)])
  markdown = render.to_markdown(name, [section], file)
  page = MarkdownIt('commonmark').enable('table').render(markdown)
  assert '<script' not in page and '<a href="javascript' not in page
  assert page.count('<em>') == 1                            # the footer's own
  assert page.count('<h1>') == 1 and page.count('<h2>') == 1
  assert f'<tr>\n<td>{name}</td>\n<td>&lt;script&gt;alert(1)&lt;/script&gt;.png</td>\n</tr>' in page
  assert f'<strong>{name}</strong> Quarantined &lt;script&gt;' in page
  assert '<li># not a heading</li>' in page and '<li>- not a list</li>' in page
  assert f'<pre><code>```\n{name}\n</code></pre>' in page
  html_page = render.to_html(name, [section], file)
  assert '<script' not in html_page and '&lt;script&gt;alert(1)&lt;/script&gt;.png' in html_page


def test_wilson_interval():
  assert facts_lib.wilson_interval(9, 9) == pytest.approx((0.7009, 1.0), abs=1e-4)
  assert facts_lib.wilson_interval(63, 80) == pytest.approx((0.6858, 0.8629), abs=1e-4)
  assert facts_lib.wilson_interval(0, 0) == (0.0, 1.0)
