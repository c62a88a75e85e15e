"""The feature cache and head training (supervised and FixMatch) on real Keras."""

import numpy as np
import pytest
import tf_keras

from components.trainer import feature_cache
from components.trainer import head as head_lib
from components.trainer import model as classifier
from pipeline import config as config_lib
from pipeline import dag

NUM_CLASSES = 3


def _config(*overrides):
  config = dag.components_config(config_lib.load_config(None, [
      'model.weights=none', 'model.image_size=32', 'model.dropout=0.0', *overrides]))
  config['class_names'] = ['a', 'b', 'c']
  return config


def _clusters(per_class, seed, spread=0.35, dims=16):
  """Gaussian blobs, one per class, around fixed well-separated centres."""
  centres = np.random.default_rng(123).normal(size=(NUM_CLASSES, dims)) * 2
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(NUM_CLASSES), per_class)
  features = centres[labels] + rng.normal(size=(len(labels), dims)) * spread * 2
  return features.astype(np.float32), labels


def _head(dims=16):
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input([dims])
  outputs = tf_keras.layers.Dense(NUM_CLASSES, activation='softmax')(inputs)
  return tf_keras.Model(inputs, outputs)


def test_feature_cache_views_are_clean_first_then_augmented():
  config = _config()
  model = classifier.build_classifier(config, NUM_CLASSES, 'image')
  extractor = classifier.feature_extractor(model)
  images = np.random.default_rng(0).uniform(-1, 1, (10, 32, 32, 3)).astype(np.float32)
  weak = model.get_layer(classifier.AUGMENTATION_LAYER)
  views = feature_cache.compute_views(
      extractor, iter([images[:5], images[5:]]), [None, weak, weak])
  assert views.shape == (3, 10, extractor.output_shape[-1])
  scale = np.abs(views[0]).max()
  np.testing.assert_allclose(views[0], extractor.predict(images, verbose=0),
                             atol=1e-5 * scale)
  assert np.abs(views[1] - views[0]).max() > 1e-2 * scale   # augmented != clean
  assert np.abs(views[1] - views[2]).max() > 1e-2 * scale   # each view draws anew


def test_feature_cache_refuses_an_empty_split():
  config = _config()
  model = classifier.build_classifier(config, NUM_CLASSES, 'image')
  with pytest.raises(ValueError, match='No unlabeled images'):
    feature_cache.compute_views(classifier.feature_extractor(model), iter([]), [None],
                                'unlabeled images')


def test_head_learns_from_cached_views_and_keeps_the_best_epoch():
  features, labels = _clusters(20, seed=1, spread=0.2)
  views = np.stack([features, features + 0.05])
  eval_features, eval_labels = _clusters(10, seed=2, spread=0.2)
  head = _head()
  history = head_lib.train_head(
      head, head_lib.LabeledViews(views, labels),
      _config('training.epochs=30', 'training.early_stopping_patience=3'),
      evaluation=(eval_features, eval_labels))
  accuracy = np.mean(head.predict(eval_features, verbose=0).argmax(-1) == eval_labels)
  assert accuracy >= 0.9
  kept = int(np.argmin(history['val_loss']))
  loss, _ = head_lib._evaluate(head, (eval_features, eval_labels), 32)  # pylint: disable=protected-access
  assert loss == pytest.approx(history['val_loss'][kept], rel=1e-4)
  assert set(history) >= {'loss', 'accuracy', 'val_loss', 'val_accuracy', 'seconds'}


def test_class_weights_balance_an_imbalanced_split():
  weights = head_lib.class_weights(np.array([0] * 8 + [1] * 2), 3)
  np.testing.assert_allclose(weights, [0.625, 2.5, 0.0])


def test_fixmatch_pseudo_labels_lift_a_one_label_per_class_head():
  """With one label per class, the unlabeled clusters carry the information:
  the semi-supervised head pseudo-labels them and beats the supervised one."""
  labeled, labels = _clusters(1, seed=3, spread=0.2)
  pool, _ = _clusters(100, seed=4)
  test, test_labels = _clusters(100, seed=5)
  config = _config('training.epochs=200', 'training.batch_size=3',
                   'semi_supervised.confidence_threshold=0.8')
  accuracies = {}
  for name, unlabeled in (
      ('supervised', None),
      ('fixmatch', head_lib.UnlabeledViews(pool[np.newaxis] + 0.05,
                                           pool[np.newaxis] - 0.05))):
    head = _head()
    history = head_lib.train_head(head, head_lib.LabeledViews(labeled[np.newaxis], labels),
                                  config, unlabeled)
    accuracies[name] = np.mean(head.predict(test, verbose=0).argmax(-1) == test_labels)
  assert history['pseudo_label_rate'][-1] > 0.5
  assert accuracies['fixmatch'] > accuracies['supervised']
