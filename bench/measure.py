"""Memory and CPU measurement of a pipeline process tree, shared by the benchmarks.

A parent process samples the RSS of the pipeline process and of each
descendant (DirectRunner's Beam workers apart) with psutil, because
`getrusage` only knows the largest child that has already exited. The
machine is shared, so the benchmarks also wait for, and record, the CPU
other processes use.
"""

import dataclasses
import json
import os
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import psutil

SAMPLE_SECONDS = 0.2
BEAM_WORKER_MARK = 'sdk_worker_main'   # DirectRunner multi_processing workers
MB = 1 << 20


def write_results(path: str, report: Dict[str, Any], markdown: str) -> None:
  """The JSON report at `path` and its Markdown table next to it (.md)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(report, f, indent=2)
  with open(os.path.splitext(path)[0] + '.md', 'w') as f:
    f.write(markdown)


def add_report_arguments(parser) -> None:
  """--set (pipeline config overrides) and --no-write, for the benchmarks that
  write their tables into docs/."""
  parser.add_argument('--set', dest='overrides', action='append', default=[],
                      help='pipeline config override, section.key=value')
  parser.add_argument('--no-write', action='store_true',
                      help='print only; leave docs/ and bench/results/ alone')


def publish(report: Dict[str, Any], results_json: str, table_md: str,
            markdown: str) -> None:
  """The JSON report (bench/results/) and its Markdown tables (docs/)."""
  os.makedirs(os.path.dirname(results_json), exist_ok=True)
  with open(results_json, 'w') as f:
    json.dump(report, f, indent=1)
  with open(table_md, 'w') as f:
    f.write(markdown)


def dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


class Sampler(threading.Thread):
  """Samples RSS and CPU time of a process and its descendants until it exits.

  Stops the whole tree if the machine runs low on memory (`min_free_bytes`
  available) or the tree exceeds `max_tree_bytes`, so an over-sized run ends
  with a measurement instead of the kernel's OOM killer picking a victim.
  """

  def __init__(self, pid: int, min_free_bytes: int, max_tree_bytes: int):
    super().__init__(daemon=True)
    self._process = psutil.Process(pid)
    self._min_free = min_free_bytes
    self._max_tree = max_tree_bytes
    self.samples: List[Dict[str, Any]] = []
    self.cpu_seconds: Dict[int, float] = {}   # last seen user+system per pid
    self.stopped_for: Optional[str] = None
    self.stop = threading.Event()

  def _tree(self) -> List[psutil.Process]:
    return [self._process] + self._process.children(recursive=True)

  def run(self) -> None:
    while not self.stop.is_set():
      try:
        tree = self._tree()
      except psutil.Error:
        return
      main, workers, others = 0, [], []
      for process in tree:
        try:
          with process.oneshot():
            rss = process.memory_info().rss
            times = process.cpu_times()
            command = process.cmdline()
        except psutil.Error:
          continue
        self.cpu_seconds[process.pid] = times.user + times.system
        if process.pid == self._process.pid:
          main = rss
        # DirectRunner starts each worker as `/bin/sh -c python -m ...`; the
        # Python process is the worker, the shell is only its parent.
        elif (BEAM_WORKER_MARK in ' '.join(command) and
              'python' in os.path.basename(command[0])):
          workers.append(rss)
        else:
          others.append(rss)
      sample = {'t': time.time(), 'main': main, 'workers': workers, 'others': others}
      self.samples.append(sample)
      total = main + sum(workers) + sum(others)
      available = psutil.virtual_memory().available
      if available < self._min_free or (self._max_tree and total > self._max_tree):
        self.stopped_for = (
            f'memory guard: tree RSS {total / MB:.0f} MB, machine available '
            f'{available / MB:.0f} MB')
        self._kill_tree()
        return
      self.stop.wait(SAMPLE_SECONDS)

  def _kill_tree(self) -> None:
    try:
      tree = self._tree()
    except psutil.Error:
      return
    for process in reversed(tree):   # workers first, then the pipeline process
      try:
        process.kill()
      except psutil.Error:
        pass


@dataclasses.dataclass
class SampledRun:
  """A finished command: exit code, samples, and whose CPU it used."""
  code: int
  sampler: Sampler
  seconds: float
  cpu_seconds: float          # the command's process tree
  other_cpu_seconds: float    # everything else on the machine meanwhile


def run_sampled(command: Sequence[str], log_path: str, min_free_bytes: int,
                max_tree_bytes: int, **popen_kwargs) -> SampledRun:
  """Runs `command` (stdout and stderr to `log_path`) under a `Sampler`."""
  busy_before, start = busy_seconds(), time.time()
  with open(log_path, 'w') as log:
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                             **popen_kwargs)
    sampler = Sampler(child.pid, min_free_bytes, max_tree_bytes)
    sampler.start()
    code = child.wait()
    sampler.stop.set()
    sampler.join()
  ours = sum(sampler.cpu_seconds.values())
  return SampledRun(code, sampler, time.time() - start, ours,
                    max(0.0, busy_seconds() - busy_before - ours))


def busy_seconds() -> float:
  """CPU seconds all processes on the machine have used since boot."""
  times = psutil.cpu_times()
  return sum(times) - times.idle - getattr(times, 'iowait', 0.0)


def others_cores(seconds: float = 10.0) -> float:
  """Mean cores used by other processes over `seconds` (nothing of ours runs)."""
  me = psutil.Process()
  busy, own = busy_seconds(), sum(me.cpu_times()[:2])
  time.sleep(seconds)
  return max(0.0, (busy_seconds() - busy) - (sum(me.cpu_times()[:2]) - own)) / seconds


def wait_until_quiet(max_cores: float, max_wait: float) -> Dict[str, float]:
  """Waits (up to `max_wait` s) until other processes use < `max_cores` cores."""
  start = time.time()
  cores = others_cores()
  while cores >= max_cores and time.time() - start < max_wait:
    print(f'    waiting: other processes use {cores:.2f} cores', flush=True)
    cores = others_cores(30.0)
  return {'waited_seconds': round(time.time() - start), 'other_cores_at_start': round(cores, 2)}


def peaks(samples: List[Dict[str, Any]], window: Optional[List[float]] = None) -> Dict[str, Any]:
  """Peak RSS (MB) of the pipeline process, of one Beam worker and of the tree."""
  if window:
    samples = [s for s in samples if window[0] <= s['t'] <= window[1]]
  if not samples:
    return {}
  return {
      'main_mb': round(max(s['main'] for s in samples) / MB),
      'worker_max_mb': round(max((max(s['workers'], default=0) for s in samples)) / MB),
      'workers_seen': max(len(s['workers']) for s in samples),
      'tree_total_mb': round(max(s['main'] + sum(s['workers']) + sum(s['others'])
                                 for s in samples) / MB),
      'samples': len(samples),
  }


def timeline(samples: List[Dict[str, Any]], every: float = 2.0) -> List[List[float]]:
  """[seconds since start, pipeline process MB, sum of Beam workers MB, tree MB]."""
  points, last = [], None
  for s in samples:
    if last is None or s['t'] - last >= every:
      last = s['t']
      points.append([round(s['t'] - samples[0]['t'], 1), round(s['main'] / MB),
                     round(sum(s['workers']) / MB),
                     round((s['main'] + sum(s['workers']) + sum(s['others'])) / MB)])
  return points


def component_windows(metadata_path: str, with_state: bool = False) -> Dict[str, List[Any]]:
  """[start, end] in epoch seconds (+ state) of each execution of the newest run."""
  from pipeline import metadata  # pylint: disable=g-import-not-at-top
  store = metadata.open_store(metadata_path)
  windows = {}
  for node, execution in metadata.run_executions(store, metadata.newest_run(store)):
    windows[node] = [execution.create_time_since_epoch / 1000.0,
                     execution.last_update_time_since_epoch / 1000.0]
    if with_state:
      windows[node].append(metadata.state_name(execution))
  return windows
