"""The model registry as consumers see it: versions, aliases and TF Serving labels.

    from registry import Registry
    model = Registry('/srv/registry', 'image_classifier').resolve('production')
    model.path      # the SavedModel folder of the version `production` points at
    model.labels    # class names in class-id order
    model.version   # the integer version

A reference is a version number, `latest` (the newest published version) or an
alias (aliases.py). Every published version is blessed: RegistryPusher
publishes a model only when the Evaluator blessed it, so `latest` is the
newest blessed model. TF Serving only loads integer folders and ignores
`aliases/`; `serving_config()` turns the aliases into the `version_labels`
of a TF Serving model config (serving.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Dict, List, Optional, Union

from registry import aliases as alias_lib
from registry import layout
from registry import serving


@dataclasses.dataclass(frozen=True)
class ModelRef:
  """One published version: what a consumer loads."""
  version: int
  path: str                      # SavedModel folder (saved_model.pb, variables/, ...)
  labels: List[str]              # class names, index = class id

  @functools.cached_property
  def record(self) -> Dict[str, Any]:
    """model_record.json, read on first use: scoring needs only the path and
    labels, and a version folder copied by hand may have no record."""
    return _record(self.path, self.version)


def _record(path: str, version: int) -> Dict[str, Any]:
  return {**layout.read_record(path), 'version': version}


class Registry:
  """The published versions and aliases of one model in a registry folder."""

  def __init__(self, registry_dir: str, model_name: str):
    self.registry_dir = registry_dir
    self.model_name = layout.validate_model_name(model_name)
    self.model_dir = os.path.join(registry_dir, model_name)
    self.aliases_dir = os.path.join(self.model_dir, alias_lib.ALIASES_DIR)

  # Versions.

  def version_numbers(self) -> List[int]:
    return layout.versions(self.registry_dir, self.model_name)

  def _check_version(self, version: int) -> int:
    layout.version_dir(self.registry_dir, self.model_name, version)
    return version

  def record(self, version: int) -> Dict[str, Any]:
    """A version's model_record.json (metrics, data fingerprint, pipeline run)."""
    path = os.path.join(self.model_dir, str(self._check_version(version)))
    return _record(path, version)

  def versions(self) -> List[Dict[str, Any]]:
    """The records of every published version, oldest first."""
    return [self.record(version) for version in self.version_numbers()]

  def latest(self) -> ModelRef:
    """The newest version; published versions are all blessed."""
    return self.get(layout.latest_version(self.registry_dir, self.model_name))

  def get(self, version: int) -> ModelRef:
    path = os.path.join(self.model_dir, str(self._check_version(version)))
    return ModelRef(version, path, layout.read_labels(path))

  def resolve(self, ref: Union[int, str]) -> ModelRef:
    """A version number, `latest` or an alias -> the version's SavedModel and labels."""
    if isinstance(ref, int) or layout.is_version_number(ref):
      return self.get(int(ref))
    if ref == alias_lib.LATEST:
      return self.latest()
    return self.get(self.alias(ref)['version'])

  # Aliases.

  def alias(self, alias: str) -> Dict[str, Any]:
    """{'alias', 'version', 'updated_at', 'history': [entries, oldest first]}."""
    state = alias_lib.read(self.aliases_dir, alias)
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
    return {name: self.alias(name) for name in alias_lib.names(self.aliases_dir)}

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
    alias_lib.check_reason(reason)
    alias_lib.validate_alias(alias)
    version = (self._check_version(int(version))
               if isinstance(version, int) or layout.is_version_number(version) else
               self.resolve(version).version)
    with alias_lib.locked(self.registry_dir, self.aliases_dir):
      state = alias_lib.read(self.aliases_dir, alias)
      if state is not None and state['version'] == version:
        return state
      return alias_lib.write(self.aliases_dir, self.model_name, alias, state,
                             alias_lib.PROMOTE, version, reason, who)

  def rollback(self, alias: str, reason: str, who: Optional[str] = None) -> Dict[str, Any]:
    """Points `alias` back at the target it had before its latest promotion.

    Rollbacks undo promotions in order: after promotions to 1, 2, 3, a first
    rollback goes to 2, a second to 1, a third fails (nothing earlier).
    """
    alias_lib.check_reason(reason)
    with alias_lib.locked(self.registry_dir, self.aliases_dir):
      state = self.alias(alias)
      stack = alias_lib.promotion_stack(state['history'])
      if len(stack) < 2:
        raise ValueError(f'Alias {alias!r} has no earlier version to roll back to '
                         f'(history: {len(state["history"])} change(s))')
      return alias_lib.write(self.aliases_dir, self.model_name, alias, state,
                             alias_lib.ROLLBACK, self._check_version(stack[-2]),
                             reason, who)

  # TF Serving.

  def serving_config(self, base_path: Optional[str] = None) -> str:
    """A TF Serving model config (text proto) with the aliases as `version_labels`."""
    return serving.serving_config(self, base_path)
