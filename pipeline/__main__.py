"""Command line: `python -m pipeline {run,predict,schema,compile,schedule} ...`."""

import argparse
import logging
import os
import sys
import warnings

from pipeline import config as config_lib


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m pipeline', description=__doc__)
  commands = parser.add_subparsers(dest='command', required=True)

  run = commands.add_parser('run', help='run the whole pipeline locally')
  run.add_argument('--data', help='image folder (<class>/<image> or '
                   'train|eval/<class>/<image>); sets data.path')
  run.add_argument('--unlabeled', metavar='DIR', help='folder of unlabeled '
                   'images (any layout) for semi-supervised training and the '
                   'label queue; sets data.unlabeled_path')
  run.add_argument('--output', help='output folder; sets pipeline.output_dir')
  run.add_argument('--orchestrator', choices=('local', 'beam'), default='local',
                   help="TFX's LocalDagRunner (default) or BeamDagRunner")
  run.add_argument('--wait', action='store_true',
                   help='when another run is using the output folder, wait for '
                   'it to end instead of failing at once')
  _add_config_arguments(run)

  predict = commands.add_parser('predict', help='score images with a pushed model')
  predict.add_argument('--model', required=True, help='a SavedModel version '
                       'folder, or a registry model folder (its newest version)')
  predict.add_argument('inputs', nargs='*', metavar='IMAGE_OR_FOLDER',
                       help='image files, and folders (scored recursively)')
  predict.add_argument('--list', dest='lists', action='append', default=[],
                       metavar='FILE', help='a file with one image path per line '
                       '(- for stdin); repeatable')
  predict.add_argument('--format', choices=('jsonl', 'csv'), default='jsonl')
  predict.add_argument('--output', help='file to write; default stdout')
  predict.add_argument('--top-k', type=int, default=3, metavar='K',
                       help='most likely classes listed per image')
  predict.add_argument('--batch-size', type=int, default=32)
  predict.add_argument('--explain', metavar='DIR', help='also write a Grad-CAM '
                       'overlay PNG per scored image into DIR (where the model '
                       'looked); each row names it in the field explanation')

  schema = commands.add_parser(
      'schema', help='print a schema for an image folder (classes from its folders)')
  schema.add_argument('--data', required=True)
  schema.add_argument('--template', default=config_lib.DataConfig.schema_file)

  compile_ = commands.add_parser(
      'compile', help='write the pipeline spec a remote orchestrator runs')
  compile_.add_argument('--target', choices=('kubeflow',), default='kubeflow',
                        help='Kubeflow Pipelines v2 / Vertex AI Pipelines')
  compile_.add_argument('--output', default='pipeline.json',
                        help='spec file: .json (PipelineJob) or .yaml (PipelineSpec)')
  _add_config_arguments(compile_)

  schedule = commands.add_parser(
      'schedule', help='schedule a compiled spec on Vertex AI Pipelines '
      '(deploy.schedule, deploy.timezone), or submit one run with --once')
  schedule.add_argument('--spec', required=True, help='the file `compile` wrote')
  schedule.add_argument('--once', action='store_true',
                        help='submit a single run now instead of a schedule')
  _add_config_arguments(schedule)
  _add_registry_parser(commands)
  return parser


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--config', help='YAML file with config sections')
  parser.add_argument('--set', dest='overrides', action='append', default=[],
                      metavar='SECTION.KEY=VALUE', help='override one config value')


def _add_registry_parser(commands) -> None:
  """`registry ...`: versions, lineage and aliases (registry/cli.py)."""
  registry = commands.add_parser(
      'registry', help='list, inspect and alias published model versions')
  actions = registry.add_subparsers(dest='registry_command', required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument('--output', help="a run's output folder (pipeline.output_dir): "
                      'its registry/ and metadata.sqlite')
  common.add_argument('--registry', help='registry folder; default pipeline.registry')
  common.add_argument('--model', help='model name; default pipeline.model_name')
  common.add_argument('--metadata', help='ML Metadata SQLite file (lineage); '
                      'default <output>/metadata.sqlite')
  common.add_argument('--json', action='store_true', help='machine-readable output')
  _add_config_arguments(common)
  add = lambda name, text: actions.add_parser(name, parents=[common], help=text)
  add('list', 'versions with date, metrics, baseline, data fingerprint, aliases')
  add('show', 'one version: record and lineage').add_argument(
      'ref', metavar='VERSION|ALIAS|latest')
  add('latest', 'the newest (blessed) version')
  add('aliases', 'each alias and the version it points at')
  add('history', 'every change of an alias').add_argument('alias')
  promote = add('promote', 'point an alias at a version')
  promote.add_argument('alias')
  promote.add_argument('version', metavar='VERSION|ALIAS|latest')
  rollback = add('rollback', "point an alias back at its previous version")
  rollback.add_argument('alias')
  for change in (promote, rollback):
    change.add_argument('--reason', required=True, help='why (kept in the history)')
    change.add_argument('--who', help='who; default the login name')
  add('serving-config', 'TF Serving model config with the aliases as '
      'version_labels').add_argument('--base-path', help='the model folder as '
                                     'TF Serving sees it; default its absolute path')


def main(argv=None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    return _run_command(args)
  except (FileNotFoundError, ValueError) as error:
    # Bad input from the user (config, paths): one clear line, no traceback.
    parser.exit(2, f'error: {error}\n')


def _run_command(args) -> int:
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
  # Beam's per-transform INFO chatter (type hints, state caches) drowns out
  # the components' own progress messages.
  logging.getLogger('apache_beam').setLevel(logging.WARNING)
  warnings.filterwarnings('ignore', category=FutureWarning)
  if args.command == 'schema':
    from pipeline import schema  # pylint: disable=g-import-not-at-top
    classes, empty = schema.class_folders(args.data)
    schema.report_empty_class_folders(empty)
    print(schema.derive(args.template, classes), end='')
    return 0
  if args.command == 'predict':
    from pipeline import predict  # pylint: disable=g-import-not-at-top
    failures = predict.run(args.model, args.inputs, args.batch_size, args.top_k,
                           args.format, args.lists, args.output, args.explain)
    return 1 if failures else 0
  if args.command in ('compile', 'schedule'):
    return _kubeflow_command(args)
  if args.command == 'registry':
    from registry import cli as registry_cli  # pylint: disable=g-import-not-at-top
    return registry_cli.run_command(args)

  overrides = list(args.overrides)
  if args.data:
    overrides.append(f'data.path={os.path.abspath(args.data)}')
  if args.unlabeled:
    overrides.append(f'data.unlabeled_path={os.path.abspath(args.unlabeled)}')
  if args.output:
    overrides.append(f'pipeline.output_dir={os.path.abspath(args.output)}')
  config = config_lib.load_config(args.config, overrides).check_local_folders()
  derive_schema = bool(args.data) and 'data.schema_file' not in config_lib.named_keys(
      args.config, args.overrides)
  from pipeline import run_summary, runner  # pylint: disable=g-import-not-at-top
  try:
    summary = runner.run_local(config, args.orchestrator, wait=args.wait,
                               derive_schema=derive_schema)
  except runner.RunLockedError as error:
    # Nothing was run nor written: one line, and the usage-error exit code.
    print(f'error: {error}', file=sys.stderr)
    return runner.EXIT_USAGE
  print(run_summary.format_summary(summary))
  return runner.exit_code(summary)


def _kubeflow_command(args) -> int:
  config = config_lib.load_config(args.config, args.overrides)
  from pipeline import kubeflow  # pylint: disable=g-import-not-at-top
  if args.command == 'compile':
    print(kubeflow.compile_spec(config, args.output))
    return 0
  print(kubeflow.send(kubeflow.build_vertex_request(config, args.spec, args.once)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
