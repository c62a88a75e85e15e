"""Grad-CAM in the graph: where on the image the classifier found its top class.

Grad-CAM (Selvaraju et al. 2017) weighs each channel of the backbone's last
feature map A [h, w, K] by the spatial mean of the top class's score gradient
with respect to it (alpha), sums the weighted channels and keeps the positive
part: the regions whose features raise that score. The backbone is frozen,
so its last feature map is the only spatial evidence the head sees, and the
gradient stops there: explaining costs about one forward pass.

The score is the top class's log-probability, log p_c = z_c - logsumexp(z):
the logit-equivalent of a softmax layer, whose logits are not an output of
the model. Unlike z_c itself, it is unchanged by the shift all softmax logits
allow, so its gradient is the evidence for this class *rather than the
others*. (The probability's gradient is p_c times it: the same map after
the normalisation to [0, 1].)

One change to the recipe: each location's features are taken relative to the
image's mean feature (alpha . (A_ij - mean A)) before the ReLU. The head
L2-normalises the pooled features, so scaling them changes nothing and the
gradient is nearly orthogonal to them: plain Grad-CAM's sum over the map
(alpha . sum A) is then a small number of arbitrary sign, and on the tests'
64-px model 20 of 60 maps were all negative, i.e. blank after the ReLU. Taken
relative to the mean, a location's value is the first-order change of the
score if the pooled features moved towards that location's: its correlation
with the exact change (the head rerun with that location left out of the
pooling) was 0.98 there, and no map was blank.
"""

from typing import Callable, Dict

import tensorflow as tf
import tf_keras

from models import classifier

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
  each image's top class (relative to the image's mean feature, see above),
  scaled to a maximum of 1 (all zeros only for a uniform feature map), and
  the classifier's own probabilities and class_id (`output_specs`)."""
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
    relative = feature_map - tf.reduce_mean(feature_map, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(channel_weights * relative, axis=-1))
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    return {HEATMAP: tf.math.divide_no_nan(cam, peak),
            'probabilities': probabilities, 'class_id': class_id}

  return explain
