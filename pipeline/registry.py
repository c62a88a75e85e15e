"""The model registry as consumers see it: versions, aliases and TF Serving labels.

    from pipeline.registry import Registry
    model = Registry('/srv/registry', 'image_classifier').resolve('production')
    model.path      # the SavedModel folder of the version `production` points at
    model.labels    # class names in class-id order
    model.version   # the integer version

A reference is a version number, `latest` (the newest published version) or an
alias. Every published version is blessed: RegistryPusher publishes a model
only when the Evaluator blessed it, so `latest` is the newest blessed model.

Aliases (`production`, `staging`, ...) name a version and keep the history of
every change (who, when, why). One JSON file per alias:

    <registry>/<model name>/aliases/<alias>.json   {"version": 3, "history": [...]}

Readers never lock: a writer writes a temporary file beside the alias file,
flushes it to disk and renames it over the old one (`os.replace`, atomic on a
POSIX filesystem), so a reader sees the old state or the new one, complete.
Writers (promote, rollback) hold an exclusive `flock` on `aliases/.lock` for
their whole read-modify-write, so concurrent promoters are serialized and no
history entry is lost. Aliases are changed only on a local or mounted
filesystem (flock and rename are not available on object stores); they can be
read anywhere tf.io.gfile reaches. TF Serving only loads integer folders and
ignores `aliases/`; `serving_config()` turns the aliases into the
`version_labels` of a TF Serving model config.

The low-level layout and publication are in components/registry_pusher/registry.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import getpass
import json
import os
import re
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Union

from components.registry_pusher import registry as published

LATEST = 'latest'
ALIASES_DIR = 'aliases'
_LOCK_FILE = '.lock'
_ALIAS_PATTERN = re.compile(r'[A-Za-z][A-Za-z0-9_-]{0,63}')
PROMOTE, ROLLBACK = 'promote', 'rollback'


@dataclasses.dataclass(frozen=True)
class ModelRef:
  """One published version: what a consumer loads."""
  version: int
  path: str                      # SavedModel folder (saved_model.pb, variables/, ...)
  labels: List[str]              # class names, index = class id
  record: Dict[str, Any] = dataclasses.field(repr=False, compare=False,
                                             default_factory=dict)


def validate_alias(alias: str) -> str:
  """Alias names start with a letter (so they never look like a version) and
  hold letters, digits, - and _; `latest` is reserved."""
  if not isinstance(alias, str) or not _ALIAS_PATTERN.fullmatch(alias):
    raise ValueError(f'Invalid alias {alias!r}: use a letter followed by up to 63 '
                     'letters, digits, - or _ (a version number is not an alias)')
  if alias == LATEST:
    raise ValueError(f'{LATEST!r} is reserved: it always means the newest version')
  return alias


def _isdir(path: str) -> bool:
  if published.is_object_store(path):
    return published.gfile().isdir(path)
  return os.path.isdir(path)


def _read_json(path: str) -> Optional[Any]:
  """The file's JSON value, or None when there is no such file."""
  try:
    if published.is_object_store(path) and not published.gfile().exists(path):
      return None
    with published.open_text(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def current_user() -> str:
  try:
    return getpass.getuser()
  except (KeyError, OSError):   # no login name, no passwd entry (containers)
    return f'uid:{os.getuid()}'


class Registry:
  """The published versions and aliases of one model in a registry folder."""

  def __init__(self, registry_dir: str, model_name: str):
    self.registry_dir = registry_dir
    self.model_name = published.validate_model_name(model_name)
    self.model_dir = os.path.join(registry_dir, model_name)
    self.aliases_dir = os.path.join(self.model_dir, ALIASES_DIR)

  # Versions.

  def version_numbers(self) -> List[int]:
    return published.versions(self.registry_dir, self.model_name)

  def _check_version(self, version: int) -> int:
    published.version_dir(self.registry_dir, self.model_name, version)
    return version

  def record(self, version: int) -> Dict[str, Any]:
    """A version's model_record.json (metrics, data fingerprint, pipeline run)."""
    path = os.path.join(self.model_dir, str(self._check_version(version)))
    return {**published.read_record(path), 'version': version}

  def versions(self) -> List[Dict[str, Any]]:
    """The records of every published version, oldest first."""
    return [self.record(version) for version in self.version_numbers()]

  def latest(self) -> ModelRef:
    """The newest version; published versions are all blessed."""
    return self.get(published.latest_version(self.registry_dir, self.model_name))

  def get(self, version: int) -> ModelRef:
    record = self.record(version)
    path = os.path.join(self.model_dir, str(version))
    return ModelRef(version, path, published.read_labels(path), record)

  def resolve(self, ref: Union[int, str]) -> ModelRef:
    """A version number, `latest` or an alias -> the version's SavedModel and labels."""
    if isinstance(ref, int) or published.is_version_number(ref):
      return self.get(int(ref))
    if ref == LATEST:
      return self.latest()
    state = self.alias(ref)
    return self.get(state['version'])

  # Aliases.

  def _alias_file(self, alias: str) -> str:
    return os.path.join(self.aliases_dir, f'{validate_alias(alias)}.json')

  def _read_alias(self, alias: str) -> Optional[Dict[str, Any]]:
    """The alias file's state; its version must be a version number (the file
    may have been edited by hand): resolving it checks that it is published."""
    path = self._alias_file(alias)
    state = _read_json(path)
    if state is None:
      return None
    version = state.get('version') if isinstance(state, dict) else None
    if isinstance(version, bool) or not isinstance(version, int):
      raise ValueError(f'Alias file {path} is invalid: its version {version!r} is not '
                       'a version number')
    return state

  def alias(self, alias: str) -> Dict[str, Any]:
    """{'alias', 'version', 'updated_at', 'history': [entries, oldest first]}."""
    state = self._read_alias(alias)
    if state is None:
      known = ', '.join(self.aliases()) or 'none'
      raise ValueError(f'No alias {alias!r} for {self.model_name!r} in '
                       f'{self.registry_dir} (aliases: {known})')
    return state

  def history(self, alias: str) -> List[Dict[str, Any]]:
    """Every change of an alias, oldest first: action, version, previous, who, when, why."""
    return self.alias(alias)['history']

  def aliases(self) -> Dict[str, Dict[str, Any]]:
    """Every alias's current state, by name."""
    names = sorted(name[:-len('.json')] for name in published.listdir(self.aliases_dir)
                   if name.endswith('.json') and not name.startswith('.'))
    return {name: self.alias(name) for name in names if _ALIAS_PATTERN.fullmatch(name)}

  def aliases_by_version(self) -> Dict[int, List[str]]:
    found: Dict[int, List[str]] = {}
    for name, state in self.aliases().items():
      found.setdefault(state['version'], []).append(name)
    return found

  def promote(self, alias: str, version: Union[int, str], reason: str,
              who: Optional[str] = None) -> Dict[str, Any]:
    """Points `alias` at `version` (created on first use); returns the alias state.

    Promoting to the version the alias already points at changes nothing.
    """
    _check_reason(reason)
    validate_alias(alias)
    version = (self._check_version(int(version))
               if isinstance(version, int) or published.is_version_number(version) else
               self.resolve(version).version)
    with self._locked():
      state = self._read_alias(alias)
      if state is not None and state['version'] == version:
        return state
      return self._write(alias, state, PROMOTE, version, reason, who)

  def rollback(self, alias: str, reason: str, who: Optional[str] = None) -> Dict[str, Any]:
    """Points `alias` back at the target it had before its latest promotion.

    Rollbacks undo promotions in order: after promotions to 1, 2, 3, a first
    rollback goes to 2, a second to 1, a third fails (nothing earlier).
    """
    _check_reason(reason)
    with self._locked():
      state = self.alias(alias)
      stack = _promotion_stack(state['history'])
      if len(stack) < 2:
        raise ValueError(f'Alias {alias!r} has no earlier version to roll back to '
                         f'(history: {len(state["history"])} change(s))')
      return self._write(alias, state, ROLLBACK, self._check_version(stack[-2]),
                         reason, who)

  @contextlib.contextmanager
  def _locked(self) -> Iterator[None]:
    """Exclusive lock serializing the alias writers of this model."""
    if published.is_object_store(self.registry_dir):
      raise ValueError(f'Aliases can only be changed in a registry on a local or '
                       f'mounted filesystem, not {self.registry_dir}')
    os.makedirs(self.aliases_dir, exist_ok=True)
    fd = os.open(os.path.join(self.aliases_dir, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o664)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      yield
    finally:
      os.close(fd)   # releases the lock

  def _write(self, alias: str, state: Optional[Dict[str, Any]], action: str,
             version: int, reason: str, who: Optional[str]) -> Dict[str, Any]:
    """Appends a history entry and replaces the alias file atomically (lock held)."""
    entry = {'action': action, 'version': version,
             'previous': state['version'] if state else None,
             'who': who or current_user(), 'when': _now(), 'reason': reason.strip()}
    history = (state['history'] if state else []) + [entry]
    new_state = {'alias': alias, 'model_name': self.model_name, 'version': version,
                 'updated_at': entry['when'], 'history': history}
    _replace_json(self._alias_file(alias), new_state)
    return new_state

  # TF Serving.

  def serving_config(self, base_path: Optional[str] = None) -> str:
    """A TF Serving model config (text proto) with the aliases as `version_labels`.

    It serves the newest version, every alias's version and the version each
    alias would roll back to: TF Serving moves a label only onto a loaded
    version, so a rollback then takes effect at the server's next config poll.
    """
    # pylint: disable=g-import-not-at-top
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    states = self.aliases()
    aliases = {name: state['version'] for name, state in states.items()}
    served = {self.latest().version, *aliases.values()}
    for state in states.values():
      served.update(_promotion_stack(state['history'])[-2:])
    served = sorted(v for v in served
                    if published.is_published(self.registry_dir, self.model_name, v))
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = self.model_name
    model.base_path = base_path or (
        self.model_dir if published.is_object_store(self.model_dir)
        else os.path.abspath(self.model_dir))
    model.model_platform = 'tensorflow'
    model.model_version_policy.specific.versions.extend(served)
    for name, version in sorted(aliases.items()):
      model.version_labels[name] = version
    return text_format.MessageToString(config)


def _check_reason(reason: str) -> None:
  if not isinstance(reason, str) or not reason.strip():
    raise ValueError('A reason is required for every alias change (--reason)')


def _promotion_stack(history: List[Dict[str, Any]]) -> List[int]:
  """The versions a chain of rollbacks would go back through, current last."""
  stack: List[int] = []
  for entry in history:
    if entry['action'] == ROLLBACK:
      stack.pop()
    else:
      stack.append(entry['version'])
  return stack


def _replace_json(path: str, value: Any) -> None:
  """Writes `path` so that readers see either its old or its new content."""
  directory = os.path.dirname(path)
  fd, temporary = tempfile.mkstemp(dir=directory, prefix='.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      json.dump(value, f, indent=2, sort_keys=True)
      f.write('\n')
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise
  directory_fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(directory_fd)   # the rename itself survives a crash
  finally:
    os.close(directory_fd)


# Command line: `python -m pipeline registry ...` (arguments in pipeline/__main__.py).

def run_command(args) -> int:
  """Runs one `registry` sub-command; prints text, or JSON with --json."""
  from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  overrides = list(args.overrides)
  if args.output:
    overrides.append(f'pipeline.output_dir={os.path.abspath(args.output)}')
  config = config_lib.load_config(args.config, overrides)
  registry = Registry(args.registry or config.pipeline.registry,
                      args.model or config.pipeline.model_name)
  metadata_path = args.metadata or config.pipeline.metadata_path
  if not _isdir(registry.model_dir):
    raise FileNotFoundError(
        f'No registry for {registry.model_name!r} at {registry.model_dir} '
        '(run the pipeline first, or pass --output, --registry or --model)')
  command = args.registry_command
  if command == 'list':
    rows = version_rows(registry, metadata_path)
    _print(args, rows, lambda: format_versions(rows))
  elif command in ('show', 'latest'):
    model = registry.resolve(args.ref if command == 'show' else LATEST)
    details = describe(registry, model, metadata_path)
    _print(args, details, lambda: format_details(details))
  elif command == 'aliases':
    aliases = registry.aliases()
    _print(args, aliases, lambda: format_aliases(aliases))
  elif command == 'history':
    history = registry.history(args.alias)
    _print(args, history, lambda: format_history(args.alias, history))
  elif command in ('promote', 'rollback'):
    before = registry._read_alias(args.alias)  # pylint: disable=protected-access
    state = (registry.promote(args.alias, args.version, args.reason, args.who)
             if command == 'promote' else
             registry.rollback(args.alias, args.reason, args.who))
    changed = before is None or len(state['history']) > len(before['history'])
    _print(args, state, lambda: (
        f'{args.alias} -> version {state["version"]}' +
        (f' (was {state["history"][-1]["previous"] or "unset"})' if changed else
         ' (already there: nothing changed)')))
  elif command == 'serving-config':
    print(registry.serving_config(args.base_path), end='')
  return 0


def _print(args, value: Any, text) -> None:
  print(json.dumps(value, indent=2, sort_keys=True) if args.json else text())


def fingerprint_short(fingerprint: Optional[str]) -> str:
  """`45 files/1a2b3c4d`: the files of every split (one fingerprint line
  each, labeled and unlabeled) and a hash of ExampleGen's full fingerprint."""
  if not fingerprint:
    return '-'
  import hashlib  # pylint: disable=g-import-not-at-top
  counts = [int(part.split(':', 1)[1]) for line in fingerprint.splitlines()
            for part in line.split(',') if part.startswith('num_files:')]
  digest = hashlib.sha256(fingerprint.encode('utf-8')).hexdigest()[:8]
  return f'{sum(counts)} files/{digest}' if counts else digest


def version_rows(registry: Registry, metadata_path: str) -> List[Dict[str, Any]]:
  """One summary per version, oldest first; the baseline's version comes from
  ML Metadata when the store is there."""
  records = registry.versions()
  baselines: Dict[str, str] = {}
  if os.path.isfile(metadata_path):
    from pipeline import lineage  # pylint: disable=g-import-not-at-top
    baselines = lineage.baseline_model_uris(metadata_path, records)
  model_uri = published.MODEL_URI_KEY
  by_uri = {r.get(model_uri): r['version'] for r in records}
  aliases = registry.aliases_by_version()
  rows = []
  for record in records:
    evaluation = record.get('evaluation') or {}
    data = record.get('data') or {}
    rows.append({
        'version': record['version'],
        'pushed_at': record.get('pushed_at'),
        'accuracy': evaluation.get('accuracy'),
        'baseline_accuracy': evaluation.get('baseline_accuracy'),
        'baseline_version': by_uri.get(baselines.get(record.get(model_uri))),
        'example_count': evaluation.get('example_count'),
        'input_fingerprint': data.get('input_fingerprint'),
        'fingerprint': fingerprint_short(data.get('input_fingerprint')),
        'pipeline_run_id': record.get('pipeline_run_id'),
        'aliases': aliases.get(record['version'], []),
    })
  return rows


def _number(value: Optional[float]) -> str:
  return '-' if value is None else f'{value:.4f}'


def format_versions(rows: List[Dict[str, Any]]) -> str:
  header = ('VERSION', 'PUSHED (UTC)', 'ACCURACY', 'BASELINE BEATEN', 'EXAMPLES',
            'DATA FINGERPRINT', 'ALIASES')
  table = [header]
  for row in rows:
    baseline = _number(row['baseline_accuracy'])
    if row['baseline_version'] is not None:
      baseline += f' (v{row["baseline_version"]})'
    table.append((str(row['version']), (row['pushed_at'] or '-')[:19].replace('T', ' '),
                  _number(row['accuracy']), baseline, str(row['example_count'] or '-'),
                  row['fingerprint'], ', '.join(row['aliases']) or '-'))
  if len(table) == 1:
    return 'No published version.'
  widths = [max(len(line[i]) for line in table) for i in range(len(header))]
  return '\n'.join('  '.join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                   for line in table)


def describe(registry: Registry, model: ModelRef, metadata_path: str) -> Dict[str, Any]:
  """A version's record, path, labels, aliases and lineage (or why there is none)."""
  try:
    from pipeline import lineage  # pylint: disable=g-import-not-at-top
    found = lineage.model_lineage(metadata_path, model.record)
  except (FileNotFoundError, LookupError, ValueError) as error:
    found = {'error': str(error)}   # e.g. a registry copied without its store
  return {'model_name': registry.model_name, 'version': model.version,
          'path': model.path, 'labels': model.labels,
          'aliases': registry.aliases_by_version().get(model.version, []),
          'record': model.record, 'lineage': found}


def format_details(details: Dict[str, Any]) -> str:
  record, found = details['record'], details['lineage']
  evaluation, data = record.get('evaluation') or {}, record.get('data') or {}
  baseline = evaluation.get('baseline_accuracy')
  lines = [
      f'{details["model_name"]} version {details["version"]}'
      f'  aliases: {", ".join(details["aliases"]) or "-"}',
      f'  path          {details["path"]}',
      f'  pushed at     {record.get("pushed_at")}',
      f'  pipeline run  {record.get("pipeline_run_id")}',
      f'  accuracy      {_number(evaluation.get("accuracy"))} on '
      f'{evaluation.get("example_count")} images; baseline '
      + (_number(baseline) if baseline is not None else 'none (first blessed model)'),
      f'  labels        {", ".join(details["labels"])}',
      f'  data          {data.get("input_fingerprint")} (span {data.get("span")})',
  ]
  for name, metrics in sorted((evaluation.get('per_class') or {}).items()):
    values = ', '.join(f'{key} {value:.3f}' for key, value in sorted(metrics.items()))
    lines.append(f'  class {name:<12} {values}')
  lines += format_exports(record.get('exports'))
  if 'error' in found:
    lines.append(f'Lineage: unavailable: {found["error"]}')
    return '\n'.join(lines)
  run = found.get('pipeline_run') or {}
  lines.append(f'Lineage (ML Metadata {found["metadata_path"]}):')
  lines.append(f'  pipeline run          {run.get("id")} (pipeline '
               f'{run.get("pipeline")}, context {run.get("context_id")})')
  for role in ('examples', 'schema', 'statistics', 'transform_graph', 'model', 'evaluation', 'blessing', 'baseline_model'):
    artifact = found.get(role)
    lines.append(f'  {role:<21} ' + ('-' if artifact is None else
                 f'{artifact["component"]} #{artifact["artifact_id"]} {artifact["uri"]}'))
  return '\n'.join(lines)


def format_exports(exports: Optional[Dict[str, Any]]) -> List[str]:
  """The record's TFLite models, one line each: size, eval accuracy, drop
  against the SavedModel, and whether the version holds it (and why not)."""
  if not exports:
    return []
  lines = [f'  tflite        eval accuracy on {exports["eval_images"]} images; SavedModel '
           f'{_number(exports["saved_model_accuracy"])}, quantized models published within '
           f'{_number(exports["max_quantized_drop"])} of it']
  for name, model in exports['models'].items():
    status = 'published' if model['published'] else f'NOT published: it {model["reason"]}'
    lines.append(f'    {name:<27} {model["kind"]:<13} {model["bytes"]:>10} bytes  '
                 f'accuracy {_number(model["accuracy"])}  drop {model["drop"]:+.4f}  {status}')
  return lines


def format_aliases(aliases: Dict[str, Dict[str, Any]]) -> str:
  if not aliases:
    return 'No alias.'
  lines = []
  for name, state in aliases.items():
    last = state['history'][-1]
    lines.append(f'{name} -> version {state["version"]}  ({last["action"]} by '
                 f'{last["who"]} at {last["when"]}: {last["reason"]})')
  return '\n'.join(lines)


def format_history(alias: str, history: List[Dict[str, Any]]) -> str:
  return '\n'.join(
      f'{entry["when"]}  {entry["action"]:<8} {alias} -> {entry["version"]} '
      f'(was {entry["previous"] or "unset"})  by {entry["who"]}: {entry["reason"]}'
      for entry in history)
