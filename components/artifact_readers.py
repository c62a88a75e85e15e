"""Reading back what one step wrote, for the steps after it and for the run
summary, the report and the CLI: one reader per file, so no step imports
another step's code to read its output. File names are in contracts.py.
"""

import csv
import json
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
import tensorflow_transform as tft

from components import contracts


def _json(path: str) -> Dict[str, Any]:
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _json_lines(path: str) -> List[Dict[str, Any]]:
  with tf.io.gfile.GFile(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def quarantine(examples_uri: str) -> List[Dict[str, str]]:
  """ImageExampleGen's quarantine.jsonl: each file not ingested, with why."""
  return _json_lines(os.path.join(examples_uri, contracts.QUARANTINE_FILE))


def label_conflicts(examples_uri: str) -> Optional[List[Dict[str, Any]]]:
  """ImageExampleGen's images under two or more labels; None when the examples
  predate the check (no label_conflicts.jsonl)."""
  path = os.path.join(examples_uri, contracts.LABEL_CONFLICTS_FILE)
  if not tf.io.gfile.exists(path):
    return None
  return _json_lines(path)


def data_gate_report(result_uri: str) -> Dict[str, Any]:
  """The data_gate.json a passing gate wrote ({} when it is gone)."""
  return _json(os.path.join(result_uri, contracts.DATA_GATE_REPORT_FILE))


def data_quality_dir(model_run_uri: str) -> str:
  """The folder of the Trainer's data-quality audit in its ModelRun artifact."""
  return os.path.join(model_run_uri, contracts.DATA_QUALITY_DIR)


def data_quality_summary(audit_dir: str) -> Dict[str, Any]:
  """The audit's data_quality.json; {} when the run made no audit."""
  return _json(os.path.join(audit_dir, contracts.DATA_QUALITY_SUMMARY_FILE))


def data_quality_list(audit_dir: str, name: str) -> Optional[List[Dict[str, str]]]:
  """The rows of one of the audit's lists (contracts.*_CSV), or None when the
  run wrote none."""
  path = os.path.join(audit_dir, name)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return list(csv.DictReader(f))


def training_history(saved_model_dir: str) -> Dict[str, Any]:
  """The training_history.json the Trainer put into its SavedModel (and so
  into every published version)."""
  with tf.io.gfile.GFile(os.path.join(saved_model_dir, contracts.SAVED_MODEL_EXTRAS_DIR,
                                      contracts.TRAINING_HISTORY_FILE)) as f:
    return json.load(f)


def class_names(transform_graph_uri: str) -> List[str]:
  """Class names in id order, as stored in the transform graph's vocabulary."""
  vocabulary = tft.TFTransformOutput(transform_graph_uri).vocabulary_by_name(
      contracts.LABEL_VOCABULARY)
  return [name.decode('utf-8') for name in vocabulary]
