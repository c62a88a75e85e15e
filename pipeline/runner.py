"""Runs the pipeline on this machine, recording lineage in an SQLite MLMD store.

Two local orchestrators run the same `create_pipeline(config)`:
  local  TFX's LocalDagRunner: components one after another in this process.
  beam   TFX's BeamDagRunner: the DAG itself becomes a Beam pipeline whose
         steps are the components (on DirectRunner here); each component's
         own Beam jobs still follow `config.beam`.
"""

import contextlib
import datetime
import fcntl
import functools
import itertools
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Iterator, Optional

from tfx import v1 as tfx
# Not re-exported under tfx.v1; this is the path TFX's guides use.
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
from tfx.orchestration.portable import launcher

from components.data_gate.executor import DataGateError
from pipeline import report, run_summary, schema
from pipeline.config import Config, to_dict
from pipeline.dag import create_local_pipeline

ORCHESTRATORS = ('local', 'beam')
# In the output folder: held (flock) by the run using the folder, and holding
# that run's pid, host, start time and command line.
RUN_LOCK_FILE = '.run.lock'


# Exit codes of `python -m pipeline run` (README, "Exit codes"), so that a
# scheduler can tell a run that published from one that ran but did not.
EXIT_PUSHED = 0        # blessed and published, or the same model already was
EXIT_FAILED = 1        # a step failed
EXIT_USAGE = 2         # bad config or input, a data set the gate refused, folder locked
EXIT_NOT_BLESSED = 3   # the run completed; the Evaluator did not bless the model


class RunLockedError(RuntimeError):
  """Another run holds the output folder: this one did not start."""


def exit_code(summary: run_summary.RunSummary) -> int:
  """The exit code of a run that ended without an error, from its outcome."""
  if summary.blessed and summary.pushed_version is not None:
    return EXIT_PUSHED
  if summary.blessed is False:
    return EXIT_NOT_BLESSED
  return EXIT_FAILED     # no verdict, or blessed but not published


def run_local(config: Config, orchestrator: str = 'local', wait: bool = False,
              derive_schema: bool = False) -> run_summary.RunSummary:
  """Runs every component (reusing cached results), summarizes the run and
  writes its report (pipeline/report/) under `<output_dir>/reports/`.

  One run at a time per output folder (its metadata store, artifacts and
  reports): the whole run holds the folder's run lock (`run_lock`). When
  another run holds it, this one raises RunLockedError before touching
  anything, or with `wait` waits for that run to end. With `derive_schema`
  (`--data` and no named schema), the schema is derived from the class
  folders once the folder is held (schema.with_derived_schema).
  """
  if orchestrator not in ORCHESTRATORS:
    raise ValueError(f'orchestrator must be one of {ORCHESTRATORS}, got {orchestrator!r}')
  config.check_local_folders()
  os.makedirs(config.pipeline.output_dir, exist_ok=True)
  with run_lock(config.pipeline.output_dir, wait=wait,
                details={'orchestrator': orchestrator, 'data': config.data.path}):
    if derive_schema:
      config = schema.with_derived_schema(config)
    return _run_locked(config, orchestrator)


def _run_locked(config: Config, orchestrator: str) -> run_summary.RunSummary:
  logging.info('Configuration: %s', to_dict(config))
  logging.info('Orchestrator: %s; Beam runner: %s with %d worker(s)',
               orchestrator, config.beam.runner, config.beam.workers)
  dag_runner = (tfx.orchestration.LocalDagRunner() if orchestrator == 'local'
                else BeamDagRunner())
  tfx_pipeline = create_local_pipeline(config)
  try:
    with component_progress(len(tfx_pipeline.components)):
      dag_runner.run(tfx_pipeline)
  except Exception as error:
    # A failed run gets its report too (which step failed, what ran before);
    # the original error is what the caller sees, except the data gate's:
    # its own message (every problem found), whatever the orchestrator wrapped
    # around it, and where the report is.
    gate_error = DataGateError.find(error)
    report_path = _report_failed_run(config, gate_error)
    if gate_error is None:
      raise
    raise DataGateError(gate_error.message + (
        f'\nReport of the failed run: {report_path}' if report_path else '')) from error
  summary = run_summary.summarize(config.pipeline.metadata_path)
  summary.report_path = report.write_report_logged(config, summary)
  return summary


@contextlib.contextmanager
def component_progress(total: int) -> Iterator[None]:
  """Logs `[4/11] Transform running` as each component starts, and
  `[4/11] Transform done in 22.9 s` (or `failed after`) as it ends.

  LocalDagRunner and BeamDagRunner (on DirectRunner) launch every component
  in this process through TFX's `Launcher.launch`, which is wrapped while the
  block runs; TFX's own lines say neither how far the run is nor how long a
  step took.
  """
  launch = launcher.Launcher.launch
  count, lock = itertools.count(1), threading.Lock()

  @functools.wraps(launch)
  def launch_with_progress(self):
    node = self._pipeline_node  # pylint: disable=protected-access
    with lock:
      step = f'[{next(count)}/{total}] {node.node_info.id}'
    logging.info('%s running', step)
    start = time.monotonic()
    try:
      execution_info = launch(self)
    except BaseException:
      logging.error('%s failed after %.1f s', step, time.monotonic() - start)
      raise
    logging.info('%s done in %.1f s', step, time.monotonic() - start)
    return execution_info

  launcher.Launcher.launch = launch_with_progress
  try:
    yield
  finally:
    launcher.Launcher.launch = launch


def _report_failed_run(config: Config,
                       gate_error: Optional[DataGateError] = None) -> Optional[str]:
  """Logs the failed run's summary and writes its report; returns the report's path."""
  try:
    summary = run_summary.summarize(config.pipeline.metadata_path)
  except Exception:  # pylint: disable=broad-except
    logging.exception('The failed run could not be summarized')
    return None
  if gate_error is not None:
    summary.data_gate_problems = gate_error.problems
  logging.error('The run failed:\n%s', run_summary.format_summary(summary))
  return report.write_report_logged(config, summary)


@contextlib.contextmanager
def run_lock(output_dir: str, wait: bool = False,
             details: dict | None = None) -> Iterator[None]:
  """Holds an exclusive `flock` on `<output_dir>/.run.lock` while the block runs.

  Two runs on one output folder would interleave their writes to the same
  SQLite metadata store, artifacts and reports; this makes them serialize
  (`wait`) or makes the second fail at once with RunLockedError naming the
  holder (pid, host, start time, read from the lock file). The operating
  system drops the lock when its holder exits, however it exits (SIGKILL,
  OOM kill, power off on a local disk), so a killed run never leaves a stale
  lock: the file stays, with the dead holder's details, and is reused.
  """
  path = os.path.join(output_dir, RUN_LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)   # not inherited by exec'd children
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _lock_holder(fd)
      if not wait:
        raise RunLockedError(
            f'another run ({holder}) is using {output_dir}; wait for it '
            '(pipeline run --wait) or use another pipeline.output_dir') from None
      logging.warning('Another run (%s) is using %s: waiting for it to end.',
                      holder, output_dir)
      fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({
        'pid': os.getpid(), 'host': socket.gethostname(),
        'started_at': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        'argv': sys.argv, **(details or {})}, indent=1).encode('utf-8'), 0)
    yield
  finally:
    os.close(fd)   # releases the lock


def _lock_holder(fd: int) -> str:
  """'pid N on host H, started T' (', Airflow run R task K' for a DAG's task)
  from the lock file, as far as it is written."""
  try:
    holder = json.loads(os.pread(fd, 1 << 16, 0).decode('utf-8'))
    text = (f'pid {holder["pid"]} on host {holder["host"]}, '
            f'started {holder["started_at"]}')
  except (OSError, ValueError, KeyError, TypeError):
    return 'its details are not written yet'
  if 'airflow_task' in holder:    # dags/image_classifier.py
    text += f', Airflow run {holder["airflow_run"]} task {holder["airflow_task"]}'
  return text
