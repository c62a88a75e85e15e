"""Grad-CAM in the graph: where on the image the classifier found its top class.

Grad-CAM (Selvaraju et al. 2017) weighs each channel of the backbone's last
feature map A [h, w, K] by the spatial mean of the top class's score gradient
with respect to it, sums the weighted channels and keeps the positive part:
the regions whose features raise that score. The backbone is frozen, so its
last feature map is the only spatial evidence the head sees.

The score is the top class's log-probability, not its probability: the
probability's gradient vanishes as it nears 1 (the confident images a
report shows), and log p_c = z_c - logsumexp(z) is the class's logit minus
what every class shares, so its gradient is the evidence for this class
*rather than the others*, unchanged by the shift all softmax logits allow.
Its scale (1 - p_c) is common to the whole map and cancels in the
normalisation to [0, 1].
"""

from typing import Callable, Dict

import tensorflow as tf
import tf_keras

from components.trainer import model as classifier

HEATMAP = 'heatmap'


def output_specs(model: tf_keras.Model) -> Dict[str, tf.TensorSpec]:
  """The outputs of `grad_cam` for a batch: heatmap [N, h, w] at the backbone's
  feature-map size, probabilities [N, C], class_id [N]."""
  _, height, width, _ = model.get_layer(classifier.BACKBONE_LAYER).output_shape
  return {
      HEATMAP: tf.TensorSpec([None, height, width], tf.float32),
      'probabilities': tf.TensorSpec(model.output_shape, tf.float32),
      'class_id': tf.TensorSpec([None], tf.int64),
  }


def grad_cam(model: tf_keras.Model, normalize: Callable[[tf.Tensor], tf.Tensor]
             ) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  """A function: float RGB pixels [N, S, S, 3] in [0, 255] -> the Grad-CAM of
  each image's top class, scaled to a maximum of 1 (all zeros where no region
  raises the class's score), and the classifier's own probabilities and
  class_id (`output_specs`)."""
  augmentation = model.get_layer(classifier.AUGMENTATION_LAYER)
  backbone = model.get_layer(classifier.BACKBONE_LAYER)
  pool = model.get_layer(classifier.POOLED_FEATURES_LAYER)
  head = classifier.head(model)

  def explain(pixels):
    images = augmentation(normalize(pixels), training=False)
    with tf.GradientTape() as tape:
      feature_map = backbone(images, training=False)
      tape.watch(feature_map)
      probabilities = head(pool(feature_map), training=False)
      class_id = tf.argmax(probabilities, axis=-1)
      score = tf.math.log(tf.gather(probabilities, class_id, batch_dims=1))
    # Each image's score depends on its own feature map only, so one gradient
    # of the batch's scores holds every image's.
    gradients = tape.gradient(score, feature_map)
    channel_weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(channel_weights * feature_map, axis=-1))
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    return {HEATMAP: tf.math.divide_no_nan(cam, peak),
            'probabilities': probabilities, 'class_id': class_id}

  return explain
