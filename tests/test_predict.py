"""`python -m pipeline predict`: inputs, batching, output formats, failures.

Runs the command in process against a stand-in SavedModel with the real
`serving_default` contract (encoded bytes in through the shared image decoder,
probabilities / class_id / class_name out), so each test takes milliseconds;
tests/test_pipeline_e2e.py runs the command on a trained model.
"""

import csv
import io
import json
import os
import pathlib
import shutil

from PIL import Image
import pytest
import tensorflow as tf

from models import image_codec
from models import ood
from models import signatures
from pipeline import __main__ as cli
from registry import layout

from helpers import SAMPLE_DIR

LABELS = ['dark', 'bright', 'grey']


class _StandIn(tf.Module):
  """Scores images by brightness; undecodable bytes fail like the real model.
  Like a model with the unknown-image detector (ood.py), it calls an image
  unknown when its top probability is under one half."""

  def __init__(self, labels):
    super().__init__()
    self._names = tf.constant(labels)

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.string, name=signatures.SERVING_INPUT)])
  def serve(self, images):
    brightness = tf.reduce_mean(image_codec.decode_and_resize(images, 8),
                                axis=[1, 2, 3]) / 255.0
    probabilities = tf.nn.softmax(5.0 * tf.stack(
        [1.0 - brightness, brightness, tf.fill(tf.shape(brightness), 0.5)], axis=1))
    class_id = tf.argmax(probabilities, axis=-1)
    class_name = tf.gather(self._names, class_id)
    ood_score = 1.0 - tf.reduce_max(probabilities, axis=-1)
    return {'probabilities': probabilities, 'class_id': class_id,
            'class_name': class_name, 'ood_score': ood_score,
            'prediction': tf.where(ood_score > 0.5, ood.UNKNOWN, class_name)}

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.string, name=signatures.SERVING_INPUT)])
  def serve_without_detector(self, images):
    """A model exported before the detector: no `prediction`, no `ood_score`."""
    outputs = self.serve(images)
    return {key: outputs[key] for key in ('probabilities', 'class_id', 'class_name')}


def _save_model(path, labels=LABELS, with_detector=True):
  module = _StandIn(labels)
  tf.saved_model.save(module, str(path), signatures={signatures.SERVING_SIGNATURE: (
      module.serve if with_detector else module.serve_without_detector)})
  (path / layout.LABELS_FILE).write_text(''.join(f'{name}\n' for name in labels))
  return str(path)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  return _save_model(tmp_path_factory.mktemp('registry') / 'image_classifier' / '1')


@pytest.fixture
def images(tmp_path):
  """folder/ with 2 images in a sub-folder, a hidden file and a non-image; one
  more image outside it."""
  folder = tmp_path / 'folder'
  (folder / 'sub').mkdir(parents=True)
  samples = [os.path.join(SAMPLE_DIR, 'bag', name)
             for name in sorted(os.listdir(os.path.join(SAMPLE_DIR, 'bag')))[:3]]
  shutil.copy(samples[0], folder / 'sub' / 'a.png')
  shutil.copy(samples[1], folder / 'sub' / 'b.png')
  (folder / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
  (folder / 'notes.png').write_text('not a picture')
  shutil.copy(samples[2], tmp_path / 'single.png')
  return {'folder': str(folder), 'a': str(folder / 'sub' / 'a.png'),
          'b': str(folder / 'sub' / 'b.png'), 'notes': str(folder / 'notes.png'),
          'single': str(tmp_path / 'single.png'),
          'missing': str(tmp_path / 'missing.jpg')}


def _predict(capsys, *argv):
  code = cli.main(['predict', *argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


NOT_AN_IMAGE = ('not a usable image: Unknown image file format. '
                'One of JPEG, PNG, GIF, BMP required.')


def test_jsonl_scores_files_and_folders_in_order_and_reports_failures(
    model_dir, images, capsys):
  code, out, err = _predict(capsys, '--model', model_dir, '--batch-size', '2',
                            images['single'], images['folder'], images['missing'])
  rows = [json.loads(line) for line in out.splitlines()]
  assert code == 1
  # Sorted folder walk, hidden files skipped; a batch of two with an
  # undecodable file in it is rescored one by one.
  assert [row['path'] for row in rows] == [
      images['single'], images['notes'], images['a'], images['b'], images['missing']]
  assert rows[1] == {'path': images['notes'], 'error':
                     NOT_AN_IMAGE}
  assert rows[4] == {'path': images['missing'],
                     'error': 'unreadable: No such file or directory'}
  for row in (rows[0], rows[2], rows[3]):
    assert set(row) == {'path', 'prediction', 'class_name', 'class_id', 'probability',
                        'ood_score', 'top_k'}
    assert row['class_name'] == LABELS[row['class_id']] == row['top_k'][0]['class_name']
    assert row['ood_score'] == pytest.approx(1 - row['probability'])
    assert row['prediction'] == (ood.UNKNOWN if row['ood_score'] > 0.5
                                 else row['class_name'])
    assert row['probability'] == row['top_k'][0]['probability']
    probabilities = [k['probability'] for k in row['top_k']]
    assert probabilities == sorted(probabilities, reverse=True)
    assert abs(sum(probabilities) - 1) < 1e-5     # top 3 of 3 classes
  assert 'Scored 3 of 5 files, 2 failed.' in err


def test_csv_output_file_with_top_k_cells_and_error_column(
    model_dir, images, tmp_path, capsys):
  output = tmp_path / 'scores.csv'
  code, out, _ = _predict(capsys, '--model', model_dir, '--format', 'csv',
                          '--output', str(output), '--top-k', '2',
                          images['single'], images['notes'])
  assert code == 1 and out == ''
  with open(output, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['path', 'prediction', 'class_name', 'class_id',
                           'probability', 'ood_score', 'top_k', 'error']
  scored, failed = rows
  assert scored['path'] == images['single'] and scored['error'] == ''
  top = [cell.rsplit(':', 1) for cell in scored['top_k'].split(';')]
  assert len(top) == 2 and top[0][0] == scored['class_name']
  assert float(top[0][1]) == float(scored['probability'])
  assert float(top[0][1]) >= float(top[1][1])
  assert scored['class_id'] == str(LABELS.index(scored['class_name']))
  assert failed == {'path': images['notes'], 'prediction': '', 'class_name': '',
                    'class_id': '', 'probability': '', 'ood_score': '', 'top_k': '',
                    'error':
                    NOT_AN_IMAGE}


def test_csv_and_jsonl_carry_the_same_numbers(model_dir, images, capsys):
  _, jsonl, _ = _predict(capsys, '--model', model_dir, images['a'])
  _, csv_text, _ = _predict(capsys, '--model', model_dir, '--format', 'csv', images['a'])
  row = json.loads(jsonl)
  (cells,) = csv.DictReader(io.StringIO(csv_text))
  assert float(cells['probability']) == row['probability']
  assert cells['top_k'] == ';'.join(f"{k['class_name']}:{k['probability']!r}"
                                    for k in row['top_k'])


def test_csv_cells_that_would_start_a_formula_are_quoted(
    images, tmp_path, capsys, monkeypatch):
  """A file named `=1+1.png` and classes named `=dark`, `@bright`, `-grey` are
  formulas to a spreadsheet: in CSV their cells get a leading quote; JSON
  lines keep the real names."""
  model = _save_model(tmp_path / 'formulas', ['=dark', '@bright', '-grey'])
  monkeypatch.chdir(tmp_path)
  shutil.copy(images['a'], tmp_path / '=1+1.png')
  _, csv_text, _ = _predict(capsys, '--model', model, '--format', 'csv', '=1+1.png')
  _, jsonl, _ = _predict(capsys, '--model', model, '=1+1.png')
  (cells,) = csv.DictReader(io.StringIO(csv_text))
  row = json.loads(jsonl)
  assert cells['path'] == "'=1+1.png" and row['path'] == '=1+1.png'
  assert cells['class_name'] == "'" + row['class_name']
  assert cells['top_k'].startswith("'" + row['class_name'] + ':')
  assert not [cell for cell in cells.values() if cell.startswith(('=', '+', '-', '@'))]


def test_list_files_and_stdin(model_dir, images, tmp_path, capsys, monkeypatch):
  listing = tmp_path / 'images.txt'
  listing.write_text(f"{images['a']}\n\n  {images['folder']}  \n")
  monkeypatch.setattr('sys.stdin', io.StringIO(f"{images['single']}\n"))
  code, out, _ = _predict(capsys, '--model', model_dir, '--list', str(listing),
                          '--list', '-', '--top-k', '1')
  rows = [json.loads(line) for line in out.splitlines()]
  # A listed folder is walked like one given as an argument.
  assert [row['path'] for row in rows] == [
      images['a'], images['notes'], images['a'], images['b'], images['single']]
  assert code == 1
  assert all(len(row['top_k']) == 1 for row in rows if 'error' not in row)


def test_a_webp_file_is_refused_saying_how_to_convert_it(model_dir, tmp_path, capsys):
  webp = tmp_path / 'photo.webp'
  Image.new('RGB', (4, 3)).save(webp, format='WEBP')
  _, out, _ = _predict(capsys, '--model', model_dir, str(webp))
  assert json.loads(out)['error'] == (
      f'{NOT_AN_IMAGE}; it is WebP, which TensorFlow 2.16 cannot decode: convert it '
      'to PNG in its folder with ImageMagick, `mogrify -format png *.webp`, and move '
      'the WebP files out')


def test_all_scored_exits_zero(model_dir, images, capsys):
  code, out, _ = _predict(capsys, '--model', model_dir, images['a'], images['b'])
  assert code == 0 and len(out.splitlines()) == 2


def test_registry_model_folder_uses_its_newest_version(model_dir, images, capsys):
  model_folder = os.path.dirname(model_dir)
  newer = _save_model(pathlib.Path(model_folder) / '2', ['noir', 'blanc', 'gris'])
  try:
    _, out, _ = _predict(capsys, '--model', model_folder, images['a'])
  finally:
    shutil.rmtree(newer)
  assert json.loads(out)['class_name'] in {'noir', 'blanc', 'gris'}


def test_nothing_to_score_is_a_usage_error(model_dir, tmp_path, capsys):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['predict', '--model', model_dir, str(tmp_path / 'empty')])
  assert exit_info.value.code == 2
  assert 'no image files to score' in capsys.readouterr().err


def test_a_model_without_the_detector_predicts_its_top_class(images, tmp_path, capsys):
  old = _save_model(tmp_path / 'old', with_detector=False)
  _, out, _ = _predict(capsys, '--model', old, images['a'])
  row = json.loads(out)
  assert row['prediction'] == row['class_name'] and 'ood_score' not in row


def test_explain_with_a_model_without_its_signature_is_a_usage_error(
    model_dir, images, tmp_path, capsys):
  """A version exported before Grad-CAM: one error line, exit 2, nothing written."""
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['predict', '--model', model_dir, '--explain', str(tmp_path / 'overlays'),
              images['a']])
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ''
  (line,) = [line for line in captured.err.splitlines() if line.startswith('error:')]
  assert line == (f"error: the model {model_dir} has no 'explain_pixels' signature (it "
                  'was exported before Grad-CAM): --explain needs a newer version')
  assert not (tmp_path / 'overlays').exists()
