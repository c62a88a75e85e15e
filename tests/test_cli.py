"""`python -m pipeline run`: the exit code a scheduler reads from each
outcome, and the schema a run on new images gets."""

import pytest

from pipeline import __main__ as cli
from pipeline import config as config_lib
from pipeline import run_summary, runner, schema


@pytest.mark.parametrize('blessed, pushed_version, code', [
    (True, 2, 0),        # blessed and published (or already published) as version 2
    (False, None, 3),    # ran fine, not blessed: nothing published
    (None, None, 1),     # no verdict
])
def test_run_exit_code_tells_pushed_from_not_blessed(
    blessed, pushed_version, code, monkeypatch, tmp_path, capsys):
  summary = run_summary.RunSummary(run_id='r', components=[], blessed=blessed,
                                   pushed_version=pushed_version)
  monkeypatch.setattr(runner, 'run_local', lambda *args, **kwargs: summary)
  assert cli.main(['run', '--output', str(tmp_path)]) == code
  assert 'Pipeline run r' in capsys.readouterr().out


@pytest.fixture
def started(monkeypatch):
  """The configs `pipeline run` would have run, once it holds the output
  folder (and derived any schema), instead of running them."""
  configs = []
  def run_locked(config, *args, **kwargs):
    configs.append(config)
    return run_summary.RunSummary(run_id='r', components=[], blessed=True, pushed_version=1)
  monkeypatch.setattr(runner, '_run_locked', run_locked)
  return configs


def _class_folders(root, *names):
  for name in names:
    (root / name).mkdir(parents=True)
    (root / name / 'a.png').write_bytes(b'')
  return root


def test_data_without_a_schema_runs_on_one_derived_from_its_class_folders(
    started, tmp_path, capsys):
  data = _class_folders(tmp_path / 'images', 'dog', 'cat')
  (data / 'empty_one' / 'nested').mkdir(parents=True)
  output = tmp_path / 'out'
  assert cli.main(['run', '--data', str(data), '--output', str(output)]) == 0
  [config] = started
  derived = config.data.schema_file
  assert derived.startswith(str(output / schema.PINNED_DIR))
  assert schema.class_names(derived) == ['cat', 'dog']
  assert capsys.readouterr().err.splitlines() == [
      'Empty class folder(s) left out of the schema (no file at any depth): empty_one',
      f'Schema derived from the 2 class folders of {data}: {derived}; '
      f'to pin these class ids, run with --set data.schema_file={derived}']


def test_a_named_schema_is_kept_as_it_is(started, tmp_path, capsys):
  data = _class_folders(tmp_path / 'images', 'dog', 'cat')
  named = str(tmp_path / 'mine.pbtxt')
  (tmp_path / 'run.yaml').write_text(f'data:\n  schema_file: {named}\n')
  cli.main(['run', '--data', str(data), '--set', f'data.schema_file={named}'])
  cli.main(['run', '--data', str(data), '--config', str(tmp_path / 'run.yaml')])
  cli.main(['run', '--output', str(tmp_path / 'out')])     # no --data: the default
  assert [config.data.schema_file for config in started] == [
      named, named, config_lib.DataConfig.schema_file]
  assert capsys.readouterr().err == ''


def test_one_class_folder_with_images_is_refused_naming_the_empty_ones(tmp_path, capsys):
  data = _class_folders(tmp_path / 'images', 'cat')
  (data / 'dog').mkdir()
  with pytest.raises(SystemExit) as exited:
    cli.main(['run', '--data', str(data), '--output', str(tmp_path / 'out')])
  assert exited.value.code == 2
  assert capsys.readouterr().err.splitlines() == [
      'Empty class folder(s) left out of the schema (no file at any depth): dog',
      "error: A classifier needs at least two classes, got ['cat']"]
