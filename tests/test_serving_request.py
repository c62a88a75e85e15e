"""The TF Serving requests docs/serving.md documents work on a published model.

No TF Serving binary here, so the test stands in for it in process, following
its request rules (tensorflow_serving/util/json_tensor.cc for REST; the
PredictRequest's TensorProtos for gRPC): JSON instances or inputs are decoded
(`{"b64": ...}` objects -> bytes into a DT_STRING tensor keyed by input name),
the SavedModel's signature is called, and outputs are encoded back the way TF
Serving does. The model is the end-to-end run's published version (read only).
The documented JSON bodies, the saved_model_cli listing and the Python clients
are taken from the doc itself, so the doc cannot drift from the model.
"""

import base64
import concurrent.futures
import http.server
import json
import os
import re
import threading
import urllib.error

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from models import signatures

import docs_blocks
from helpers import E2E_CLASSES, SAMPLE_DIR

MODEL_NAME = 'image_classifier'


@pytest.fixture(scope='module')
def model(e2e_first_run):
  loaded = tf.saved_model.load(e2e_first_run.pushed_to)
  return {'signatures': loaded.signatures, 'loaded': loaded}


@pytest.fixture(scope='module')
def sample_paths():
  return [os.path.join(SAMPLE_DIR, name, sorted(os.listdir(os.path.join(SAMPLE_DIR, name)))[0])
          for name in E2E_CLASSES]


def _read(path):
  with open(path, 'rb') as f:
    return f.read()


def _direct(model, paths):
  """What serving_default returns when called with the files' bytes."""
  outputs = model['signatures'][signatures.SERVING_SIGNATURE](
      **{signatures.SERVING_INPUT: tf.constant([_read(p) for p in paths])})
  return {name: value.numpy() for name, value in outputs.items()}


# --- TF Serving's REST rules, for one-dimensional inputs ---------------------

def _is_b64(value):
  return isinstance(value, dict) and list(value) == ['b64'] and isinstance(value['b64'], str)


def _element(value, dtype):
  if isinstance(value, dict):
    if dtype != tf.string or not _is_b64(value):
      raise ValueError(f'JSON object {value} is not a b64 value of a DT_STRING input')
    return base64.b64decode(value['b64'], validate=True)
  return value.encode('utf-8') if dtype == tf.string else value


def rest_to_tensors(body, input_specs):
  """({input name: tensor}, 'row' or 'columnar') as TF Serving makes them from
  a JSON predict request."""
  if ('instances' in body) == ('inputs' in body):
    raise ValueError("expecting exactly one of 'instances' or 'inputs'")
  if 'instances' in body:
    rows, request_format = body['instances'], 'row'
    named = isinstance(rows[0], dict) and not _is_b64(rows[0])
    if not named and len(input_specs) > 1:
      raise ValueError('instances is a plain list, but there are several inputs')
    columns = ({name: [row[name] for row in rows] for name in rows[0]} if named
               else {next(iter(input_specs)): rows})
  else:
    inputs, request_format = body['inputs'], 'columnar'
    named = isinstance(inputs, dict) and not _is_b64(inputs)
    columns = inputs if named else {next(iter(input_specs)): inputs}
  if set(columns) != set(input_specs):
    raise ValueError(f'inputs {sorted(columns)} are not {sorted(input_specs)}')
  return {
      name: tf.constant([_element(v, input_specs[name].dtype) for v in values],
                        input_specs[name].dtype)
      for name, values in columns.items()}, request_format


def _json_value(name, array):
  if array.dtype == object:
    encode = ((lambda b: {'b64': base64.b64encode(b).decode('ascii')})
              if name.endswith('_bytes') else (lambda b: b.decode('utf-8')))
    return np.vectorize(encode, otypes=[object])(array).tolist()
  return array.tolist()


def tensors_to_rest(outputs, request_format):
  """The JSON body TF Serving answers with (MakeJsonFromTensors)."""
  values = {name: _json_value(name, np.asarray(array)) for name, array in outputs.items()}
  if request_format == 'columnar':
    return {'outputs': values if len(values) > 1 else next(iter(values.values()))}
  batch = len(next(iter(values.values())))
  if len(values) == 1:
    return {'predictions': next(iter(values.values()))}
  return {'predictions': [{name: v[i] for name, v in values.items()} for i in range(batch)]}


def _input_specs(signature):
  _, specs = signature.structured_input_signature
  return specs


def serve_rest(model, body):
  signature = model['signatures'][body.get('signature_name', signatures.SERVING_SIGNATURE)]
  tensors, request_format = rest_to_tensors(body, _input_specs(signature))
  outputs = signature(**tensors)
  return tensors_to_rest({k: v.numpy() for k, v in outputs.items()}, request_format)


# --- The documented contract --------------------------------------------------

def _documented_signature():
  """{('inputs'|'outputs', name): (dtype name, shape)} from the doc's saved_model_cli listing."""
  (listing,) = [b for b in docs_blocks.blocks('text') if 'SignatureDef' in b]
  return {(kind + 's', name): (dtype, tuple(int(d) for d in shape.split(',') if d.strip()))
          for kind, name, dtype, shape in re.findall(
              r"(input|output)s\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)",
              listing)}


def _signature_listing(signature):
  def entry(spec):
    return (types_pb2.DataType.Name(spec.dtype.as_datatype_enum),
            tuple(-1 if d is None else d for d in spec.shape.as_list()))
  listing = {('inputs', name): entry(spec)
             for name, spec in _input_specs(signature).items()}
  listing.update({('outputs', name): entry(spec)
                  for name, spec in signature.structured_outputs.items()})
  return listing


def test_signature_is_what_the_docs_list(model):
  serving = model['signatures'][signatures.SERVING_SIGNATURE]
  assert _signature_listing(serving) == _documented_signature()
  (name, spec), = _input_specs(serving).items()
  assert (name, spec.dtype, spec.shape.as_list()) == (
      signatures.SERVING_INPUT, tf.string, [None])


def _documented_json():
  bodies = [json.loads(block) for block in docs_blocks.blocks('json')]
  requests = [b for b in bodies if 'instances' in b or 'inputs' in b]
  responses = {'row': [b for b in bodies if 'predictions' in b],
               'columnar': [b for b in bodies if 'outputs' in b]}
  assert len(requests) == 3 and len(requests) + sum(map(len, responses.values())) == len(bodies)
  return requests, responses


def _fill_b64(value, images):
  """The documented body with each "<...>" b64 placeholder replaced by an image."""
  if _is_b64(value) and value['b64'].startswith('<'):
    return {'b64': base64.b64encode(next(images)).decode('ascii')}
  if isinstance(value, dict):
    return {k: _fill_b64(v, images) for k, v in value.items()}
  if isinstance(value, list):
    return [_fill_b64(v, images) for v in value]
  return value


def _skeleton(value):
  """The JSON's structure and value types, lists collapsed to their first item:
  what a client relies on."""
  if isinstance(value, dict):
    return {k: _skeleton(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_skeleton(value[0])] if value else []
  return type(value).__name__


def test_documented_rest_bodies_score_like_the_signature(model, sample_paths):
  requests, responses = _documented_json()
  for documented in requests:
    body = _fill_b64(documented, iter([_read(p) for p in sample_paths]))
    images = json.dumps(body).count('"b64"')
    assert 1 <= images <= len(sample_paths)
    response = json.loads(json.dumps(serve_rest(model, body)))  # as sent on the wire
    request_format = 'row' if 'instances' in body else 'columnar'
    # The documented response of that format is what comes back.
    assert {json.dumps(_skeleton(r), sort_keys=True)
            for r in responses[request_format]} == {
                json.dumps(_skeleton(response), sort_keys=True)}
    direct = _direct(model, sample_paths[:images])
    columns = (response['outputs'] if request_format == 'columnar' else
               {name: [row[name] for row in response['predictions']]
                for name in response['predictions'][0]})
    assert columns['class_name'] == [n.decode() for n in direct['class_name']]
    assert columns['class_id'] == direct['class_id'].tolist()
    np.testing.assert_allclose(columns['probabilities'], direct['probabilities'], atol=1e-6)


# --- The documented clients against in-process stand-ins ---------------------

class _RestHandler(http.server.BaseHTTPRequestHandler):
  model = None

  def do_POST(self):  # pylint: disable=invalid-name
    match = re.fullmatch(rf'/v1/models/{MODEL_NAME}(/versions/\d+)?:predict', self.path)
    try:
      if not match:
        raise ValueError(f'no servable for {self.path}')
      body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
      status, answer = 200, serve_rest(self.model, body)
    except (ValueError, KeyError, tf.errors.InvalidArgumentError) as error:
      status, answer = 400, {'error': str(error)}
    data = json.dumps(answer).encode()
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


@pytest.fixture
def rest_server(model):
  handler = type('Handler', (_RestHandler,), {'model': model})
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{server.server_address[1]}'
  server.shutdown()
  server.server_close()


def test_documented_python_rest_client(model, sample_paths, rest_server, tmp_path):
  predict_rest = docs_blocks.python_function('predict_rest')
  results = predict_rest(sample_paths, url=rest_server)
  direct = _direct(model, sample_paths)
  assert [name for name, _ in results] == [n.decode() for n in direct['class_name']]
  np.testing.assert_allclose([p for _, p in results], direct['probabilities'], atol=1e-6)
  not_an_image = tmp_path / 'notes.png'
  not_an_image.write_text('not a picture')
  with pytest.raises(urllib.error.HTTPError) as error:
    predict_rest([sample_paths[0], str(not_an_image)], url=rest_server)
  assert error.value.code == 400 and 'error' in json.load(error.value)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """TF Serving's Predict: TensorProtos in, the signature, TensorProtos out."""

  def __init__(self, model):
    self._model = model

  def Predict(self, request, context):  # pylint: disable=invalid-name
    signature = self._model['signatures'][
        request.model_spec.signature_name or signatures.SERVING_SIGNATURE]
    specs = _input_specs(signature)
    if request.model_spec.name != MODEL_NAME or set(request.inputs) != set(specs):
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f'{request.model_spec.name}: inputs {sorted(request.inputs)}')
    for name, proto in request.inputs.items():
      if proto.dtype != specs[name].dtype.as_datatype_enum:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'{name}: dtype {proto.dtype}')
    outputs = signature(**{name: tf.constant(tf.make_ndarray(proto))
                           for name, proto in request.inputs.items()})
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for name, value in outputs.items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return response


@pytest.fixture
def grpc_target(model):
  server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      _PredictionService(model), server)
  port = server.add_insecure_port('127.0.0.1:0')
  server.start()
  yield f'127.0.0.1:{port}'
  server.stop(None)


def test_documented_grpc_client(model, sample_paths, grpc_target):
  predict_grpc = docs_blocks.python_function('predict_grpc')
  class_names, probabilities = predict_grpc(sample_paths, target=grpc_target)
  direct = _direct(model, sample_paths)
  assert class_names == [n.decode() for n in direct['class_name']]
  assert probabilities.dtype == np.float32
  assert probabilities.shape == (len(sample_paths), len(E2E_CLASSES))
  np.testing.assert_allclose(probabilities, direct['probabilities'], atol=1e-6)


def test_grpc_request_tensor_is_what_the_signature_takes(model, sample_paths):
  """The request the documented client builds, fed as TF Serving feeds it."""
  request = predict_pb2.PredictRequest()
  images = [_read(p) for p in sample_paths]
  request.inputs[signatures.SERVING_INPUT].CopyFrom(
      tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)]))
  proto = request.inputs[signatures.SERVING_INPUT]
  assert proto.dtype == types_pb2.DT_STRING
  assert [d.size for d in proto.tensor_shape.dim] == [len(images)]
  fed = tf.make_ndarray(proto)
  assert fed.tolist() == images
  outputs = model['signatures'][signatures.SERVING_SIGNATURE](
      **{signatures.SERVING_INPUT: tf.constant(fed)})
  np.testing.assert_allclose(outputs['probabilities'].numpy(),
                             _direct(model, sample_paths)['probabilities'], atol=1e-6)
