"""Aliases (`production`, `staging`, ...): a name for a version, with the
history of every change (who, when, why). One JSON file per alias:

    <registry>/<model name>/aliases/<alias>.json   {"version": 3, "history": [...]}

Readers never lock: a writer writes a temporary file beside the alias file,
flushes it to disk and renames it over the old one (`os.replace`, atomic on a
POSIX filesystem), so a reader sees the old state or the new one, complete.
Writers (promote, rollback in api.py) hold an exclusive `flock` on
`aliases/.lock` for their whole read-modify-write, so concurrent promoters are
serialized and no history entry is lost. Aliases are changed only on a local
or mounted filesystem (flock and rename are not available on object stores);
they can be read anywhere tf.io.gfile reaches.
"""

import contextlib
import datetime
import fcntl
import getpass
import json
import os
import re
import tempfile
from typing import Any, Dict, Iterator, List, Optional

from components import contracts
from registry import layout

LATEST = 'latest'
ALIASES_DIR = 'aliases'
_LOCK_FILE = '.lock'
_ALIAS_PATTERN = re.compile(r'[A-Za-z][A-Za-z0-9_-]{0,63}')
PROMOTE, ROLLBACK = 'promote', 'rollback'


def validate_alias(alias: str) -> str:
  """Alias names start with a letter (so they never look like a version) and
  hold letters, digits, - and _; `latest` is reserved."""
  if not isinstance(alias, str) or not _ALIAS_PATTERN.fullmatch(alias):
    raise ValueError(f'Invalid alias {alias!r}: use a letter followed by up to 63 '
                     'letters, digits, - or _ (a version number is not an alias)')
  if alias == LATEST:
    raise ValueError(f'{LATEST!r} is reserved: it always means the newest version')
  return alias


def check_reason(reason: str) -> None:
  if not isinstance(reason, str) or not reason.strip():
    raise ValueError('A reason is required for every alias change (--reason)')


def names(aliases_dir: str) -> List[str]:
  """The aliases that have a file, sorted."""
  found = sorted(name[:-len('.json')] for name in layout.listdir(aliases_dir)
                 if name.endswith('.json') and not name.startswith('.'))
  return [name for name in found if _ALIAS_PATTERN.fullmatch(name)]


def _alias_file(aliases_dir: str, alias: str) -> str:
  return os.path.join(aliases_dir, f'{validate_alias(alias)}.json')


def read(aliases_dir: str, alias: str) -> Optional[Dict[str, Any]]:
  """The alias file's state, or None without one; its version must be a version
  number (the file may have been edited by hand): resolving it checks that it
  is published."""
  path = _alias_file(aliases_dir, alias)
  state = _read_json(path)
  if state is None:
    return None
  version = state.get('version') if isinstance(state, dict) else None
  if isinstance(version, bool) or not isinstance(version, int):
    raise ValueError(f'Alias file {path} is invalid: its version {version!r} is not '
                     'a version number')
  return state


def promotion_stack(history: List[Dict[str, Any]]) -> List[int]:
  """The versions a chain of rollbacks would go back through, current last."""
  stack: List[int] = []
  for entry in history:
    if entry['action'] == ROLLBACK:
      stack.pop()
    else:
      stack.append(entry['version'])
  return stack


@contextlib.contextmanager
def locked(registry_dir: str, aliases_dir: str) -> Iterator[None]:
  """Exclusive lock serializing the alias writers of one model."""
  if contracts.is_remote(registry_dir):
    raise ValueError(f'Aliases can only be changed in a registry on a local or '
                     f'mounted filesystem, not {registry_dir}')
  os.makedirs(aliases_dir, exist_ok=True)
  fd = os.open(os.path.join(aliases_dir, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o664)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)   # releases the lock


def write(aliases_dir: str, model_name: str, alias: str,
          state: Optional[Dict[str, Any]], action: str, version: int, reason: str,
          who: Optional[str]) -> Dict[str, Any]:
  """Appends a history entry and replaces the alias file atomically (lock held)."""
  entry = {'action': action, 'version': version,
           'previous': state['version'] if state else None,
           'who': who or current_user(), 'when': _now(), 'reason': reason.strip()}
  history = (state['history'] if state else []) + [entry]
  new_state = {'alias': alias, 'model_name': model_name, 'version': version,
               'updated_at': entry['when'], 'history': history}
  _replace_json(_alias_file(aliases_dir, alias), new_state)
  return new_state


def current_user() -> str:
  try:
    return getpass.getuser()
  except (KeyError, OSError):   # no login name, no passwd entry (containers)
    return f'uid:{os.getuid()}'


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _read_json(path: str) -> Optional[Any]:
  """The file's JSON value, or None when there is no such file."""
  try:
    if contracts.is_remote(path) and not layout.gfile().exists(path):
      return None
    with layout.open_text(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


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
