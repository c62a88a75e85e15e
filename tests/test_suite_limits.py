"""The suite's own set-up (pytest.ini, tests/conftest.py) in a pytest of its
own: a hung test fails alone within the time limit and the run goes on, and
`make test`'s two workers keep each group of tests that shares a set-up."""

import os
import re
import subprocess
import sys

from helpers import REPO_ROOT

HUNG_MODULE = '''
import threading


def test_hangs():
  threading.Event().wait()     # never set


def test_after_the_hang():
  pass
'''


def test_a_hung_test_fails_alone_and_the_run_goes_on_in_its_group(tmp_path):
  (tmp_path / 'test_hang.py').write_text(HUNG_MODULE)
  result = subprocess.run(
      [sys.executable, '-m', 'pytest', '-c', os.path.join(REPO_ROOT, 'pytest.ini'),
       '--rootdir', str(tmp_path), '-p', 'no:cacheprovider',
       '-p', 'conftest',            # tests/conftest.py's hooks, as for tests/
       '-n', '2', '--dist', 'loadgroup', '-v', '-o', 'timeout=5',
       str(tmp_path / 'test_hang.py')],
      cwd=str(tmp_path), capture_output=True, text=True, timeout=240,
      check=False, env={**os.environ, 'PYTHONPATH': os.path.dirname(__file__)})
  output = result.stdout + result.stderr
  assert result.returncode == 1, output[-3000:]
  assert 'Failed: Timeout (>5.0s) from pytest-timeout.' in output, output[-3000:]
  # Both tests of the module's group ran on one worker, the second after the hang.
  ran = re.findall(r'^\[(gw\d+)\] \[ *\d+%\] (\w+) (\S+)', result.stdout, re.M)
  assert [(outcome, test) for _, outcome, test in ran] == [
      ('FAILED', 'test_hang.py::test_hangs@test_hang'),
      ('PASSED', 'test_hang.py::test_after_the_hang@test_hang')], output[-3000:]
  assert len({worker for worker, _, _ in ran}) == 1, ran
  assert '1 failed, 1 passed' in output, output[-3000:]
