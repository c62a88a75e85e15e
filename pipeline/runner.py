"""Runs the pipeline in this process: LocalDagRunner, SQLite metadata store."""

import logging
import os

from tfx import v1 as tfx

from pipeline import run_summary
from pipeline.config import Config, to_dict
from pipeline.dag import create_pipeline


def run_local(config: Config) -> run_summary.RunSummary:
  """Runs every component (reusing cached results) and summarizes the run."""
  if not os.path.isdir(config.data.path):
    raise FileNotFoundError(f'Image folder {config.data.path} does not exist')
  os.makedirs(config.pipeline.output_dir, exist_ok=True)
  logging.info('Configuration: %s', to_dict(config))
  tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
  return run_summary.summarize(config.pipeline.metadata_path)
