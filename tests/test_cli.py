"""`python -m pipeline run`: the exit code a scheduler reads from each outcome."""

import pytest

from pipeline import __main__ as cli
from pipeline import run_summary, runner


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
