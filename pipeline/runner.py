"""Runs the pipeline on this machine, recording lineage in an SQLite MLMD store.

Two local orchestrators run the same `create_pipeline(config)`:
  local  TFX's LocalDagRunner: components one after another in this process.
  beam   TFX's BeamDagRunner: the DAG itself becomes a Beam pipeline whose
         steps are the components (on DirectRunner here); each component's
         own Beam jobs still follow `config.beam`.
"""

import logging
import os

from tfx import v1 as tfx
# Not re-exported under tfx.v1; this is the path TFX's guides use.
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

from pipeline import report, run_summary
from pipeline.config import Config, to_dict
from pipeline.dag import create_pipeline, local_metadata

ORCHESTRATORS = ('local', 'beam')


def run_local(config: Config, orchestrator: str = 'local') -> run_summary.RunSummary:
  """Runs every component (reusing cached results), summarizes the run and
  writes its report (pipeline/report/) under `<output_dir>/reports/`."""
  if orchestrator not in ORCHESTRATORS:
    raise ValueError(f'orchestrator must be one of {ORCHESTRATORS}, got {orchestrator!r}')
  if not os.path.isdir(config.data.path):
    raise FileNotFoundError(f'Image folder {config.data.path} does not exist')
  os.makedirs(config.pipeline.output_dir, exist_ok=True)
  logging.info('Configuration: %s', to_dict(config))
  logging.info('Orchestrator: %s; Beam runner: %s with %d worker(s)',
               orchestrator, config.beam.runner, config.beam.workers)
  dag_runner = (tfx.orchestration.LocalDagRunner() if orchestrator == 'local'
                else BeamDagRunner())
  try:
    dag_runner.run(create_pipeline(
        config, metadata_connection_config=local_metadata(config)))
  except Exception:
    # A failed run gets its report too (which step failed, what ran before);
    # the original error is what the caller sees.
    _report_failed_run(config)
    raise
  summary = run_summary.summarize(config.pipeline.metadata_path)
  summary.report_path = report.write_report_logged(config, summary)
  return summary


def _report_failed_run(config: Config) -> None:
  try:
    summary = run_summary.summarize(config.pipeline.metadata_path)
  except Exception:  # pylint: disable=broad-except
    logging.exception('The failed run could not be summarized')
    return
  logging.error('The run failed:\n%s', run_summary.format_summary(summary))
  report.write_report_logged(config, summary)
