"""`python -m pipeline registry ...` (arguments in pipeline/__main__.py): the
sub-commands and their text output; lineage comes from ML Metadata
(pipeline/lineage.py), imported only when a command needs it."""

import json
import os
from typing import Any, Dict, List, Optional

from registry import aliases as alias_lib
from registry import layout
from registry.api import ModelRef, Registry


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
  if not layout.isdir(registry.model_dir):
    raise FileNotFoundError(
        f'No registry for {registry.model_name!r} at {registry.model_dir} '
        '(run the pipeline first, or pass --output, --registry or --model)')
  command = args.registry_command
  if command == 'list':
    rows = version_rows(registry, metadata_path)
    _print(args, rows, lambda: format_versions(rows))
  elif command in ('show', 'latest'):
    model = registry.resolve(args.ref if command == 'show' else alias_lib.LATEST)
    details = describe(registry, model, metadata_path)
    _print(args, details, lambda: format_details(details))
  elif command == 'aliases':
    aliases = registry.aliases()
    _print(args, aliases, lambda: format_aliases(aliases))
  elif command == 'history':
    history = registry.history(args.alias)
    _print(args, history, lambda: format_history(args.alias, history))
  elif command in ('promote', 'rollback'):
    before = alias_lib.read(registry.aliases_dir, args.alias)
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
  model_uri = layout.MODEL_URI_KEY
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
  record = model.record   # read here: a missing record is an error, not missing lineage
  try:
    from pipeline import lineage  # pylint: disable=g-import-not-at-top
    found = lineage.model_lineage(metadata_path, record)
  except (FileNotFoundError, LookupError, ValueError) as error:
    found = {'error': str(error)}   # e.g. a registry copied without its store
  return {'model_name': registry.model_name, 'version': model.version,
          'path': model.path, 'labels': model.labels,
          'aliases': registry.aliases_by_version().get(model.version, []),
          'record': record, 'lineage': found}


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
  split = exports.get('eval_split_images', exports['eval_images'])
  lines = [f'  tflite        eval accuracy on {exports["eval_images"]} of {split} eval images; SavedModel '
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
