"""The Beam components give the same results when DirectRunner runs them in two
worker processes (`beam.workers=2`, multi_processing mode) as in-process.

ExampleGen, StatisticsGen and Transform run in two real pipelines that differ
only in their Beam arguments. The Evaluator is compared on the very same
model and examples, imported into two one-component pipelines, so that any
difference comes from Beam's execution and not from training. The SDK worker
processes Beam starts during each component's execution show that the second
of each pair really ran in two processes.
"""

import contextlib
import glob
import os
import subprocess
import time

import pytest
import tensorflow as tf
from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from components import example_splits
from components.evaluator.results import read_evaluation
from pipeline import config as config_lib
from pipeline import dag, metadata, schema
from pipeline.beam_args import beam_pipeline_args

from helpers import copy_sample

CLASSES = ['trouser', 'bag', 'sneaker', 'sandal']
SPLITS = ('train', 'eval')


def _config(root, workers):
  return config_lib.load_config(None, [
      f'data.path={root / "images"}', f'data.schema_file={root / "schema.pbtxt"}',
      f'pipeline.output_dir={root / f"workers-{workers}"}',
      'model.image_size=64', 'training.batch_size=8',
      f'beam.workers={workers}'])


def _output_uris(config):
  """{'<component>/<output>': uri} of every artifact the run recorded."""
  store = metadata.open_store(config.pipeline.metadata_path)
  return {'/'.join(artifact.uri.split(os.sep)[-3:-1]): artifact.uri
          for artifact in store.get_artifacts()}


@contextlib.contextmanager
def _sdk_worker_starts():
  """A list of (time in ms, pid) of each SDK worker process Beam's DirectRunner
  starts while the block runs. In multi_processing mode each worker is a
  `python -m apache_beam.runners.worker.sdk_worker_main` subprocess, and these
  run all of a job's bundles (a worker exiting with an error fails the job)."""
  starts = []

  class Recording(subprocess.Popen):
    def __init__(self, args, *rest, **kwargs):
      super().__init__(args, *rest, **kwargs)
      if 'apache_beam.runners.worker.sdk_worker_main' in str(args):
        starts.append((time.time() * 1000, self.pid))

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(subprocess, 'Popen', Recording)
    yield starts


def _workers_by_component(config, starts):
  """{component class: pids of the SDK workers started while its execution
  ran}, by the execution's start and end times in ML Metadata."""
  store = metadata.open_store(config.pipeline.metadata_path)
  types = {t.id: t.name.rsplit('.', 1)[-1] for t in store.get_execution_types()}
  return {
      types[execution.type_id]: [
          pid for start, pid in starts
          if (execution.create_time_since_epoch <= start
              <= execution.last_update_time_since_epoch)]
      for execution in store.get_executions()}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Artifact URIs of an in-process (1) and a two-process (2) run, and the SDK
  worker processes each run's components started."""
  root = tmp_path_factory.mktemp('multiprocessing')
  copy_sample(str(root / 'images'), CLASSES, 12)
  (root / 'schema.pbtxt').write_text(
      schema.derive(config_lib.DataConfig.schema_file, CLASSES))
  uris, worker_pids = {}, {}
  for workers, last_nodes in ((1, ['StatisticsGen', 'Trainer']),
                              (2, ['StatisticsGen', 'Transform'])):
    config = _config(root, workers)
    with _sdk_worker_starts() as starts:
      tfx.orchestration.LocalDagRunner().run(
          dag.create_pipeline(config, metadata_connection_config=dag.local_metadata(config)),
          run_options=RunOptions(to_nodes=last_nodes))
    uris[workers] = _output_uris(config)
    worker_pids[workers] = _workers_by_component(config, starts)
  return root, uris, worker_pids


def test_beam_components_ran_in_two_worker_processes(runs):
  """What makes the comparisons below mean anything: with beam.workers=2
  each Beam job of ExampleGen, StatisticsGen and Transform ran in two worker
  processes of its own; with beam.workers=1 no component started any."""
  _, _, worker_pids = runs
  assert '_ImageFileBasedExampleGen' in worker_pids[1]
  assert not any(worker_pids[1].values())
  for component in ('_ImageFileBasedExampleGen', 'StatisticsGen', 'Transform'):
    pids = worker_pids[2][component]
    assert pids and len(pids) % 2 == 0 and len(set(pids)) == len(pids), (component, pids)


def _records(uri, split):
  files = example_splits.split_files(uri, split)
  assert files, f'no records under {uri} for {split}'
  # Canonical bytes: the order of a tf.Example's feature map entries is not
  # part of its meaning and differs between processes.
  return sorted(
      tf.train.Example.FromString(record.numpy()).SerializeToString(deterministic=True)
      for record in tf.data.TFRecordDataset(files, compression_type='GZIP'))


def test_example_gen_writes_the_same_examples(runs):
  _, uris, _ = runs
  for split in SPLITS:
    in_process = _records(uris[1]['ImageExampleGen/examples'], split)
    assert _records(uris[2]['ImageExampleGen/examples'], split) == in_process


def test_transform_writes_the_same_vocabulary(runs):
  """Transform's one data-dependent output (it materializes nothing): with
  the same examples and vocabulary, the graph transforms alike."""
  _, uris, _ = runs
  vocabularies = [sorted(glob.glob(os.path.join(
      uris[w]['Transform/transform_graph'], 'transform_fn', 'assets', '*')))
                  for w in (1, 2)]
  assert vocabularies[0]
  assert [os.path.basename(p) for p in vocabularies[0]] == [
      os.path.basename(p) for p in vocabularies[1]]
  for one, two in zip(*vocabularies):
    with open(one, 'rb') as a, open(two, 'rb') as b:
      assert a.read() == b.read()


def _feature_stats(uri, split):
  stats = example_splits.read_statistics(uri, split)
  (dataset,) = stats.datasets
  features = {}
  for feature in dataset.features:
    kind = feature.WhichOneof('stats')
    common = (feature.num_stats.common_stats if kind == 'num_stats'
              else feature.string_stats.common_stats)
    entry = {'type': feature.type, 'non_missing': common.num_non_missing,
             'missing': common.num_missing}
    if kind == 'num_stats':
      entry.update(min=feature.num_stats.min, max=feature.num_stats.max,
                   mean=pytest.approx(feature.num_stats.mean, rel=1e-9))
    else:
      entry.update(unique=feature.string_stats.unique,
                   top=sorted((v.value, v.frequency) for v in feature.string_stats.top_values))
    features[feature.path.step[0]] = entry
  return dataset.num_examples, features


def test_statistics_gen_computes_the_same_statistics(runs):
  _, uris, _ = runs
  for split in SPLITS:
    in_process = _feature_stats(uris[1]['StatisticsGen/statistics'], split)
    assert in_process[0] > 0 and 'label' in in_process[1]
    assert _feature_stats(uris[2]['StatisticsGen/statistics'], split) == in_process


def test_evaluator_computes_the_same_metrics(runs):
  root, uris, _ = runs
  evaluations = {}
  for workers in (1, 2):
    config = _config(root, workers)
    examples = tfx.dsl.Importer(
        source_uri=uris[1]['ImageExampleGen/examples'],
        artifact_type=tfx.types.standard_artifacts.Examples,
        properties={'split_names': '["train", "eval"]'}).with_id('examples')
    model = tfx.dsl.Importer(
        source_uri=uris[1]['Trainer/model'],
        artifact_type=tfx.types.standard_artifacts.Model).with_id('model')
    evaluator = tfx.components.Evaluator(
        examples=examples.outputs['result'], model=model.outputs['result'],
        eval_config=dag.evaluator_config(config))
    output = root / f'evaluator-{workers}'
    with _sdk_worker_starts() as starts:
      tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
          pipeline_name='evaluator-equivalence', pipeline_root=str(output / 'root'),
          components=[examples, model, evaluator],
          metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
              str(output / 'metadata.sqlite')),
          beam_pipeline_args=beam_pipeline_args(config)))
    # The Evaluator's Beam job: in this process, or in two workers of its own.
    assert len(starts) % 2 == 0 and bool(starts) == (workers == 2), (workers, starts)
    store = metadata.open_store(str(output / 'metadata.sqlite'))
    evaluations[workers] = read_evaluation(
        store.get_artifacts_by_type('ModelEvaluation')[-1].uri, CLASSES)
  in_process, two_processes = evaluations[1], evaluations[2]
  assert in_process['example_count'] == two_processes['example_count'] > 0
  assert in_process['accuracy'] == pytest.approx(two_processes['accuracy'], abs=1e-6)
  assert in_process['confusion_matrix'] == two_processes['confusion_matrix']
  for name in CLASSES:
    assert in_process['per_class'][name] == pytest.approx(   # NaN: never predicted
        two_processes['per_class'][name], abs=1e-6, nan_ok=True)
