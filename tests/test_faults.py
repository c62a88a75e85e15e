"""Faults: killed runs, killed publishes and concurrent runs.

The slow tests (marked `faults`; `make test` runs them, `make test-faults`
runs only them) run the real pipeline as `python -m pipeline run` in its own
process group on a tiny data set, SIGKILL the whole group once a component is
mid-work, and start it again at once. Mid-work means what the code guarantees,
not a log line: the component's execution is RUNNING in ML Metadata and a file
it writes only part way through exists:

* killed in Transform (its tf.Transform temp folder `.temp_path`, removed
  when Transform succeeds, holds a file): the rerun reuses ExampleGen and
  StatisticsGen (CACHED), runs Transform again, blesses and pushes version 1;
* killed in the Trainer (its TensorBoard events file exists: the feature cache
  is built, head training has begun): same, with Transform CACHED;
* two runs started at once on one output folder: one runs, the other stops at
  once with the run lock's message; the metadata store holds one run;
* killed in the middle of a registry publish (the copy slowed down in that
  subprocess only): no partial version is ever listed or served, also to a
  reader polling `Registry.latest()` during the kills, and the next publish
  is clean.

After each: the SQLite metadata store passes `PRAGMA integrity_check`, opens
with ML Metadata and summarizes. Measured times (to the kill, to recover),
what was reused and what a kill leaves behind are printed and written to
`fault_figures.json` in pytest's base temp folder (or FAULT_FIGURES_JSON).

The quick tests (not marked) check the run lock itself: its message, `--wait`,
and that the operating system drops it when its holder is killed.
"""

import fcntl
import glob
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from helpers import E2E_CLASSES, REPO_ROOT, copy_sample, make_e2e_workspace

MODEL_NAME = 'image_classifier'
RUN_TIMEOUT = 1200        # seconds for one whole run on a busy 2-core machine
SUBPROCESS_ENV = {**os.environ, 'PYTHONPATH': REPO_ROOT, 'PYTHONUNBUFFERED': '1',
                  'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_USE_LEGACY_KERAS': '1'}
LOCK_MESSAGE = re.compile(
    r'another run \(pid (\d+) on host (\S+), started (\S+)\) is using (\S+); '
    r'wait for it \(pipeline run --wait\) or use another pipeline\.output_dir')


# --- figures for the docs ----------------------------------------------------

@pytest.fixture(scope='session')
def figures(tmp_path_factory):
  """The fault tests' measurements, merged into one JSON file by each pytest
  process (the fault tests spread over `make test`'s workers)."""
  found = {}
  yield found
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent             # the workers' shared temporary folder
  path = os.environ.get('FAULT_FIGURES_JSON') or str(base / 'fault_figures.json')
  with open(path, 'a+', encoding='utf-8') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    merged = {**json.loads(f.read() or '{}'), **found}
    f.seek(0)
    f.truncate()
    json.dump(merged, f, indent=2, sort_keys=True)
  print(f'\nFault figures ({path}):\n{json.dumps(merged, indent=2, sort_keys=True)}')


# --- running the pipeline in a killable process group --------------------------

def _workspace(root):
  workspace = make_e2e_workspace(root)
  return {**workspace,
          'metadata': os.path.join(workspace['output_dir'], 'metadata.sqlite'),
          'registry': os.path.join(workspace['output_dir'], 'registry')}


class _Run:
  """`python -m pipeline run` in its own process group, its output in a log file."""

  def __init__(self, workspace, name):
    self.log_path = str(workspace['root'] / f'{name}.log')
    args = [sys.executable, '-m', 'pipeline', 'run']
    for override in workspace['overrides']:
      args += ['--set', override]
    self._log = open(self.log_path, 'w', encoding='utf-8')  # pylint: disable=consider-using-with
    self.started = time.monotonic()
    self.process = subprocess.Popen(  # pylint: disable=consider-using-with
        args, cwd=REPO_ROOT, env=SUBPROCESS_ENV, stdout=self._log,
        stderr=subprocess.STDOUT, start_new_session=True)

  def log(self):
    with open(self.log_path, encoding='utf-8', errors='replace') as f:
      return f.read()

  def wait_until(self, what, condition, timeout=RUN_TIMEOUT):
    """Seconds since the start when `condition()` first holds; fails naming
    `what` if the run ends first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if condition():
        return time.monotonic() - self.started
      if self.process.poll() is not None:
        pytest.fail(f'the run ended (exit {self.process.returncode}) before {what}:\n'
                    f'{self.log()[-3000:]}')
      time.sleep(0.2)
    self.kill()
    pytest.fail(f'not {what} after {timeout} s:\n{self.log()[-3000:]}')

  def kill(self):
    """SIGKILLs the whole process group (pip, Beam workers too); returns the
    seconds since the start."""
    at = time.monotonic() - self.started
    try:
      os.killpg(self.process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    self.process.wait(timeout=60)
    self.kill_to_exit = time.monotonic() - self.started - at
    self._log.close()
    return at

  def finish(self, timeout=RUN_TIMEOUT):
    """(exit code, seconds since the start) once the run ends by itself."""
    try:
      code = self.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f'the run did not end in {timeout} s:\n{self.log()[-3000:]}')
    self._log.close()
    return code, time.monotonic() - self.started


def _runs(metadata_path):
  """Every pipeline run in the store, oldest first: its id and, per node, the
  states of its executions; with the output artifact states of RUNNING ones."""
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  from pipeline import metadata  # pylint: disable=g-import-not-at-top
  store = metadata.open_store(metadata_path)
  artifact_states = {v: k for k, v in metadata_store_pb2.Artifact.State.items()}
  unfinished = (metadata_store_pb2.Event.PENDING_OUTPUT, metadata_store_pb2.Event.OUTPUT)
  found = []
  for run in metadata.runs(store):
    states, unfinished_outputs = {}, {}
    for node, execution in metadata.run_executions(store, run):
      state = metadata.state_name(execution)
      states.setdefault(node, []).append(state)
      if state == 'RUNNING':
        outputs = metadata.linked_artifacts(store, [execution.id], unfinished)
        unfinished_outputs[node] = sorted(
            artifact_states[a.state] for a in {
                linked.artifact.id: linked.artifact
                for linked in outputs.get(execution.id, [])}.values())
    found.append({'run_id': run.name, 'states': states,
                  'unfinished_outputs': unfinished_outputs})
  return found


def _mid_work(workspace, node, mid_way_file):
  """A condition: `node` has written a file matching `mid_way_file` (a glob
  under its pipeline_root folder) and its execution is RUNNING in ML Metadata,
  i.e. it started and has not finished."""
  from ml_metadata import errors  # pylint: disable=g-import-not-at-top
  pattern = os.path.join(workspace['output_dir'], 'pipeline_root', node, mid_way_file)

  def condition():
    if not any(os.path.isfile(path) for path in glob.glob(pattern, recursive=True)):
      return False
    try:
      runs = _runs(workspace['metadata'])
    except errors.StatusError:      # e.g. the store is locked by a write: poll again
      return False
    return bool(runs) and runs[-1]['states'].get(node) == ['RUNNING']
  return condition


def _integrity(metadata_path):
  connection = sqlite3.connect(f'file:{metadata_path}?mode=ro', uri=True)
  try:
    return connection.execute('PRAGMA integrity_check').fetchone()[0]
  finally:
    connection.close()


def _dir_bytes(path):
  return sum(os.path.getsize(os.path.join(d, name))
             for d, _, names in os.walk(path) for name in names)


def _check_recovered(workspace, rerun_log, reused, rerun):
  """The rerun's summary, after checking that it blessed and pushed version 1
  and that the store is intact; `reused` nodes must be CACHED, `rerun` COMPLETE."""
  from pipeline import run_summary  # pylint: disable=g-import-not-at-top
  from registry import layout  # pylint: disable=g-import-not-at-top
  assert 'another run' not in rerun_log        # the killed run's lock is gone
  assert 'Model BLESSED and pushed as version 1' in rerun_log, rerun_log[-3000:]
  assert _integrity(workspace['metadata']) == 'ok'
  summary = run_summary.summarize(workspace['metadata'])
  states = {c.node_id: c.state for c in summary.components}
  for node in reused:
    assert states[node] == 'CACHED', states
  for node in rerun:
    assert states[node] == 'COMPLETE', states
  assert summary.blessed is True and summary.pushed_version == 1
  assert layout.versions(workspace['registry'], MODEL_NAME) == [1]
  assert os.path.exists(os.path.join(summary.pushed_to, 'saved_model.pb'))
  return summary, states


def _kill_and_rerun(tmp_path, figures, name, killed_node, mid_way_file, reused):
  workspace = _workspace(tmp_path)
  first = _Run(workspace, 'killed')
  kill_point = f'{killed_node} RUNNING in ML Metadata with {mid_way_file} written'
  first.wait_until(kill_point, _mid_work(workspace, killed_node, mid_way_file))
  killed_at = first.kill()
  runs = _runs(workspace['metadata'])
  assert len(runs) == 1 and runs[0]['states'][killed_node] == ['RUNNING'], runs
  # A killed execution's outputs are never LIVE, so the cache cannot pick them.
  assert 'LIVE' not in runs[0]['unfinished_outputs'].get(killed_node, []), runs
  assert _integrity(workspace['metadata']) == 'ok'
  left_behind = _dir_bytes(os.path.join(workspace['output_dir'], 'pipeline_root',
                                        killed_node))

  second = _Run(workspace, 'rerun')
  code, recovery = second.finish()
  log = second.log()
  assert code == 0, log[-3000:]
  summary, states = _check_recovered(workspace, log, reused,
                                     [killed_node, 'Evaluator', 'RegistryPusher'])
  runs = _runs(workspace['metadata'])
  assert len(runs) == 2
  # The killed run's record stays as it was (its execution RUNNING forever:
  # nothing marks it failed); the rerun's has no RUNNING execution.
  assert runs[0]['states'][killed_node] == ['RUNNING']
  assert not any('RUNNING' in s for s in runs[1]['states'].values()), runs[1]
  figures[name] = {
      'kill_point': kill_point,
      'seconds_from_start_to_kill': round(killed_at, 1),
      'seconds_from_kill_to_exit': round(first.kill_to_exit, 2),
      'rerun_seconds_to_pushed_model': round(recovery, 1),
      'rerun_states': states,
      'rerun_component_seconds': {c.node_id: round(c.seconds, 1)
                                  for c in summary.components},
      'killed_execution_left_in_store_as': 'RUNNING',
      'killed_execution_outputs': runs[0]['unfinished_outputs'].get(killed_node),
      'bytes_left_by_killed_node': left_behind,
  }


@pytest.mark.faults
def test_run_killed_in_transform_reruns_it_reusing_earlier_steps(tmp_path, figures):
  # tf.Transform's temp folder gets its first files (the analysis graph) once
  # Beam analysis starts; the executor removes it only when it succeeds.
  _kill_and_rerun(tmp_path, figures, 'killed_in_transform', 'Transform',
                  'transform_graph/*/.temp_path/**',
                  reused=['ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen'])


@pytest.mark.faults
def test_run_killed_in_trainer_reruns_it_reusing_transform(tmp_path, figures):
  # run_fn opens the TensorBoard writer in model_run once the feature cache is
  # built, as head.fit_head starts cross-validating; the model is exported
  # after the head is fitted.
  _kill_and_rerun(tmp_path, figures, 'killed_in_trainer', 'Trainer',
                  'model_run/*/**/events.out.tfevents.*',
                  reused=['ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen',
                          'Transform'])


@pytest.mark.faults
def test_two_runs_at_once_one_runs_the_other_stops_clearly(tmp_path, figures):
  workspace = _workspace(tmp_path)
  runs = [_Run(workspace, 'a'), _Run(workspace, 'b')]
  # The loser stops as soon as it reaches the lock (after importing TFX).
  deadline = time.monotonic() + RUN_TIMEOUT
  while all(run.process.poll() is None for run in runs):
    assert time.monotonic() < deadline
    time.sleep(0.2)
  loser = next(run for run in runs if run.process.poll() is not None)
  winner = next(run for run in runs if run is not loser)
  loser_code, loser_seconds = loser.finish()
  loser_log = loser.log()
  assert loser_code == 2, loser_log[-3000:]
  assert 'Traceback' not in loser_log
  match = LOCK_MESSAGE.search(loser_log)
  assert match, loser_log[-3000:]
  assert int(match.group(1)) == winner.process.pid
  assert match.group(4) == workspace['output_dir']
  assert winner.process.poll() is None        # stopped while the winner runs
  code, winner_seconds = winner.finish()
  assert code == 0, winner.log()[-3000:]
  assert 'Model BLESSED and pushed as version 1' in winner.log()
  assert _integrity(workspace['metadata']) == 'ok'
  recorded = _runs(workspace['metadata'])
  assert len(recorded) == 1, recorded
  assert all(states == ['COMPLETE'] for states in recorded[0]['states'].values()), recorded
  figures['two_runs_at_once'] = {
      'loser_exit_code': loser_code,
      'loser_seconds_to_exit': round(loser_seconds, 1),
      'loser_message': match.group(0),
      'winner_seconds': round(winner_seconds, 1),
      'pipeline_runs_in_store': len(recorded),
      'integrity_check': 'ok',
  }


# --- a publish killed half way ------------------------------------------------

# Runs in a subprocess: publishes a SavedModel folder with every file copy
# slowed down (in that process only), printing each copy before it starts.
_SLOW_PUBLISHER = textwrap.dedent('''
    import json, shutil, sys, time
    from registry import publishing
    source, registry_dir, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    copy = shutil.copyfile
    def slow_copy(src, dst, *args, **kwargs):
      print('COPY', dst, flush=True)
      time.sleep(delay)
      return copy(src, dst, *args, **kwargs)
    shutil.copyfile = slow_copy
    print('START', flush=True)
    version = publishing.publish(source, registry_dir, %r, ['a', 'b'], {'run': 'slow'})
    print('PUBLISHED', version, flush=True)
''' % MODEL_NAME)


def _fake_saved_model(path):
  """A folder with a SavedModel's file layout (the registry copies files; it
  does not load them)."""
  files = {'saved_model.pb': 2000, 'fingerprint.pb': 50,
           'variables/variables.index': 300,
           'variables/variables.data-00000-of-00001': 4_000_000,
           'assets/vocab.txt': 100, 'assets.extra/training_history.json': 100}
  for relative, size in files.items():
    os.makedirs(os.path.dirname(os.path.join(path, relative)), exist_ok=True)
    with open(os.path.join(path, relative), 'wb') as f:
      f.write(os.urandom(size))
  return sorted(files)


def _complete(version_dir, files):
  return all(os.path.exists(os.path.join(version_dir, f))
             for f in [*files, 'labels.txt', 'model_record.json'])


@pytest.mark.faults
def test_publish_killed_half_way_never_exposes_a_partial_version(tmp_path, figures):
  from registry import Registry  # pylint: disable=g-import-not-at-top
  from registry import layout  # pylint: disable=g-import-not-at-top
  from registry import publishing  # pylint: disable=g-import-not-at-top
  source = str(tmp_path / 'model')
  files = _fake_saved_model(source)
  registry_dir = str(tmp_path / 'registry')
  model_dir = os.path.join(registry_dir, MODEL_NAME)
  assert publishing.publish(source, registry_dir, MODEL_NAME, ['a', 'b'], {}) == 1

  # A reader polling `latest` through every kill and the final publish.
  seen, bad, stop = [], [], threading.Event()

  def read():
    reader = Registry(registry_dir, MODEL_NAME)
    while not stop.is_set():
      model = reader.latest()
      seen.append(model.version)
      if not _complete(model.path, files):
        bad.append((model.version, sorted(os.listdir(model.path))))
      time.sleep(0.001)

  reader_thread = threading.Thread(target=read, daemon=True)
  reader_thread.start()
  # Copies: the extra files and labels are written directly; shutil.copyfile
  # copies the SavedModel's files (a local registry), saved_model.pb last.
  kills = []
  for kill_at_copy in (1, 3, len(files)):   # len(files): just before saved_model.pb
    staging_before = set(_staging_dirs(model_dir))
    publisher = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, '-c', _SLOW_PUBLISHER, source, registry_dir, '1.0'],
        cwd=REPO_ROOT, env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    copies = 0
    for line in publisher.stdout:
      copies += line.startswith('COPY')
      if copies == kill_at_copy:
        break
    os.killpg(publisher.pid, signal.SIGKILL)
    publisher.wait()
    publisher.stdout.close()
    staging = _staging_dirs(model_dir)
    kills.append({'killed_at_copy': kill_at_copy, 'of_copies': len(files),
                  'staging_dirs_after': len(staging)})
    if kill_at_copy == len(files):
      # Killed with everything copied but saved_model.pb: the nearest miss.
      newest = os.path.join(model_dir, (set(staging) - staging_before).pop())
      assert os.path.exists(os.path.join(newest, 'variables', 'variables.index'))
      assert not os.path.exists(os.path.join(newest, 'saved_model.pb'))
    assert layout.versions(registry_dir, MODEL_NAME) == [1]
    assert Registry(registry_dir, MODEL_NAME).latest().version == 1

  # What the CLI lists: only version 1, though half-written staging folders lie beside it.
  listed = subprocess.run(
      [sys.executable, '-m', 'pipeline', 'registry', 'list', '--registry', registry_dir,
       '--model', MODEL_NAME, '--metadata', str(tmp_path / 'no.sqlite'), '--json'],
      cwd=REPO_ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300,
      check=True)
  assert [entry['version'] for entry in json.loads(listed.stdout)] == [1], listed.stdout
  latest = subprocess.run(
      [sys.executable, '-m', 'pipeline', 'registry', 'latest', '--registry', registry_dir,
       '--model', MODEL_NAME, '--metadata', str(tmp_path / 'no.sqlite'), '--json'],
      cwd=REPO_ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300,
      check=True)
  assert json.loads(latest.stdout)['version'] == 1, latest.stdout
  # Each publish removed the staging folder the previous kill left (its lock
  # was free); the last kill's is still there.
  leftovers = _staging_dirs(model_dir)
  assert len(leftovers) == 1, leftovers
  assert all(kill['staging_dirs_after'] == 1 for kill in kills), kills

  # The next publish, not slowed down, is clean: version 2, complete.
  started = time.monotonic()
  clean = subprocess.run(
      [sys.executable, '-c', _SLOW_PUBLISHER, source, registry_dir, '0'],
      cwd=REPO_ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300,
      check=True)
  assert 'PUBLISHED 2' in clean.stdout
  publish_seconds = time.monotonic() - started
  deadline = time.monotonic() + 30
  while 2 not in seen and time.monotonic() < deadline:
    time.sleep(0.05)
  stop.set()
  reader_thread.join(timeout=30)
  assert layout.versions(registry_dir, MODEL_NAME) == [1, 2]
  assert _complete(os.path.join(model_dir, '2'), files)
  assert not bad, bad[:5]
  assert set(seen) == {1, 2}
  remaining = sorted(n for n in os.listdir(model_dir) if n.startswith('.staging-'))
  assert remaining == []                        # folders and their lock files
  figures['publish_killed_half_way'] = {
      'kills': kills,
      'reader_polls_of_latest': len(seen),
      'reader_saw_incomplete_version': len(bad),
      'staging_dirs_left_after_next_publish': len(remaining),
      'staging_dirs_removed_by_next_publish': len(set(leftovers) - set(remaining)),
      'next_publish_seconds_incl_tf_import': round(publish_seconds, 1),
  }


def _staging_dirs(model_dir):
  return sorted(n for n in os.listdir(model_dir)
                if n.startswith('.staging-') and not n.endswith('.lock'))


# --- the run lock (quick: not marked) ----------------------------------------

# Holds the lock file like a run does (flock + holder details), without
# importing TFX, until it is killed.
_HOLDER = textwrap.dedent('''
    import fcntl, json, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                             'started_at': '2026-01-01T00:00:00+00:00'}).encode())
    print('LOCKED', flush=True)
    time.sleep(600)
''')


@pytest.fixture
def held_lock(tmp_path):
  """An output folder whose run lock another process holds; yields
  (output folder, that process)."""
  from pipeline import runner  # pylint: disable=g-import-not-at-top
  output_dir = tmp_path / 'outputs'
  output_dir.mkdir()
  holder = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, '-c', _HOLDER, str(output_dir / runner.RUN_LOCK_FILE)],
      stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'LOCKED'
  yield str(output_dir), holder
  holder.kill()
  holder.wait()
  holder.stdout.close()


def test_second_run_on_a_locked_output_folder_fails_at_once_touching_nothing(
    held_lock, tmp_path, capsys):
  from pipeline import __main__ as cli  # pylint: disable=g-import-not-at-top
  output_dir, holder = held_lock
  data = copy_sample(str(tmp_path / 'images'), E2E_CLASSES[:2], 2)
  started = time.monotonic()
  code = cli.main(['run', '--data', data, '--output', output_dir])
  seconds = time.monotonic() - started
  err = capsys.readouterr().err
  assert code == 2
  assert err.strip() == (
      f'error: another run (pid {holder.pid} on host {os.uname().nodename}, '
      f'started 2026-01-01T00:00:00+00:00) is using {output_dir}; wait for it '
      '(pipeline run --wait) or use another pipeline.output_dir')
  assert os.listdir(output_dir) == ['.run.lock']       # nothing else written
  assert seconds < 30


def test_killed_holder_releases_the_lock_and_wait_takes_it_then(held_lock):
  from pipeline import runner  # pylint: disable=g-import-not-at-top
  output_dir, holder = held_lock
  with pytest.raises(runner.RunLockedError, match=f'pid {holder.pid} '):
    with runner.run_lock(output_dir):
      pass
  acquired = threading.Event()

  def wait_for_lock():
    with runner.run_lock(output_dir, wait=True, details={'data': 'x'}):
      acquired.set()
      with open(os.path.join(output_dir, runner.RUN_LOCK_FILE), encoding='utf-8') as f:
        acquired.holder = json.load(f)

  waiter = threading.Thread(target=wait_for_lock)
  waiter.start()
  time.sleep(1.0)
  assert not acquired.is_set()                 # blocked behind the holder
  killed = time.monotonic()
  holder.send_signal(signal.SIGKILL)           # no clean-up runs
  waiter.join(timeout=30)
  assert acquired.is_set()
  assert time.monotonic() - killed < 5
  assert acquired.holder['pid'] == os.getpid() and acquired.holder['data'] == 'x'
  # Released again when the block ends: the next run takes it at once.
  with runner.run_lock(output_dir):
    pass
