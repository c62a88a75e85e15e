"""Executor of RegistryPusher: blessing check, record assembly, TFLite exports
(float, and quantized ones scored on the eval split), atomic publish."""

import datetime
import logging
import tempfile
from typing import Any, Dict, List

from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.types import artifact_utils

from components import artifact_readers
from components.evaluator import results
from components.registry_pusher import edge_exports
from components.registry_pusher import spec
from registry import layout
from registry import publishing


class Executor(tfx_pusher_executor.Executor):
  """Reuses the TFX Pusher's blessing check and pushed/not-pushed marking."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    pushed_model = artifact_utils.get_single_instance(output_dict[spec.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      logging.info('Model not blessed: nothing is published.')
      self._MarkNotPushed(pushed_model)
      return

    registry_dir = exec_properties[spec.REGISTRY_DIR_KEY]
    model_name = exec_properties[spec.MODEL_NAME_KEY]
    model = artifact_utils.get_single_instance(input_dict[spec.MODEL_KEY])
    published = layout.find_version(registry_dir, model_name, model.uri)
    if published is not None:
      logging.info('Model %s is already version %d: not publishing it again.',
                   model.uri, published)
      self._MarkPushed(pushed_model, layout.version_dir(
          registry_dir, model_name, published), str(published))
      return

    transform_graph = artifact_utils.get_single_instance(input_dict[spec.TRANSFORM_GRAPH_KEY])
    class_names = artifact_readers.class_names(transform_graph.uri)
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    evaluation = artifact_utils.get_single_instance(input_dict[spec.EVALUATION_KEY])
    record = {
        'pushed_at': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'pipeline_run_id': self._context.pipeline_run_id if self._context else None,
        layout.MODEL_URI_KEY: model.uri,
        'data': {
            'input_fingerprint': examples.get_string_custom_property(
                example_gen_utils.FINGERPRINT_PROPERTY_NAME),
            'span': examples.span,
            'examples_uri': examples.uri,
        },
        'evaluation': results.read_evaluation(evaluation.uri, class_names),
    }
    model_path = self.GetModelPath(input_dict)
    with tempfile.TemporaryDirectory() as scratch:
      tflite_paths, record['exports'] = edge_exports.export(
          model_path, examples.uri, class_names, scratch,
          max_drop=exec_properties[spec.MAX_QUANTIZED_DROP_KEY],
          representative_images=exec_properties[spec.REPRESENTATIVE_IMAGES_KEY],
          score_images=exec_properties[spec.SCORE_IMAGES_KEY])
      version = publishing.publish(model_path, registry_dir, model_name, class_names,
                                   record, extra_files=tflite_paths)
    destination = layout.version_dir(registry_dir, model_name, version)
    logging.info('Published %s version %d at %s', model_name, version, destination)
    self._MarkPushed(pushed_model, pushed_destination=destination,
                     pushed_version=str(version))
