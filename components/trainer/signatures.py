"""The exported model's signatures, each wrapping the same transform graph.

- `serving_default`: a batch of encoded image bytes -> probabilities, top class
  id and top class name. What TF Serving, batch jobs and the CLI call.
- `from_examples`: serialized raw tf.Examples -> the same, plus `all_classes`,
  which TFMA uses to map string labels to class ids.
- `transform_features`: serialized raw tf.Examples -> transformed features.
"""

from typing import Dict, List

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from components.transform import preprocessing

SERVING_SIGNATURE = 'serving_default'
EXAMPLES_SIGNATURE = 'from_examples'
TRANSFORM_SIGNATURE = 'transform_features'
SERVING_INPUT = 'images'


def _predictions(model: tf_keras.Model, class_names: tf.Tensor,
                 raw_features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  transformed = model.tft_layer(raw_features)
  probabilities = model(transformed[preprocessing.TRANSFORMED_IMAGE_KEY],
                        training=False)
  class_id = tf.argmax(probabilities, axis=-1)
  return {
      'probabilities': probabilities,
      'class_id': class_id,
      'class_name': tf.gather(class_names, class_id),
  }


def make_signatures(model: tf_keras.Model,
                    tf_transform_output: tft.TFTransformOutput,
                    class_names: List[str]) -> Dict[str, tf.types.experimental.ConcreteFunction]:
  """Builds the three signatures; `model.tft_layer` must already be attached."""
  names = tf.constant(class_names)
  raw_spec = tf_transform_output.raw_feature_spec()
  unlabeled_spec = {preprocessing.IMAGE_KEY: raw_spec[preprocessing.IMAGE_KEY]}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
  def serve_images(images):
    return _predictions(model, names,
                        {preprocessing.IMAGE_KEY: tf.reshape(images, [-1, 1])})

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve_examples(examples):
    features = tf.io.parse_example(examples, unlabeled_spec)
    outputs = _predictions(model, names, features)
    outputs['all_classes'] = tf.tile(names[tf.newaxis], [tf.shape(examples)[0], 1])
    return outputs

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def transform_features(examples):
    return model.tft_layer(tf.io.parse_example(examples, raw_spec))

  return {
      SERVING_SIGNATURE: serve_images.get_concrete_function(),
      EXAMPLES_SIGNATURE: serve_examples.get_concrete_function(),
      TRANSFORM_SIGNATURE: transform_features.get_concrete_function(),
  }
