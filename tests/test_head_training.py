"""The feature cache and the head's fitting (cross-validated logistic
regression, self-training kept only when it helps) on real Keras layers."""

import logging

import numpy as np
import pytest

from models import classifier
from models.trainer import feature_cache
from models.trainer import head as head_lib
from models.trainer import learning_curve

from helpers import model_settings

NUM_CLASSES = 3


def _config(*overrides):
  return model_settings('model.weights=none', 'model.image_size=32', *overrides,
                           class_names=['a', 'b', 'c'])


def _clusters(per_class, seed, spread=0.35, dims=16, offset=3.0):
  """Gaussian blobs, one per class, around fixed well-separated centres (all
  positive, like pooled ReLU6 features)."""
  centres = np.random.default_rng(123).normal(size=(NUM_CLASSES, dims)) * 2 + offset
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(NUM_CLASSES), per_class)
  features = centres[labels] + rng.normal(size=(len(labels), dims)) * spread * 2
  return np.abs(features).astype(np.float32), labels


def _head_model(dims=16):
  return classifier.standalone_head(dims, NUM_CLASSES)


def _accuracy(model, features, labels):
  return float(np.mean(model.predict(features, verbose=0).argmax(-1) == labels))


def test_feature_cache_views_are_clean_first_then_mirrored_then_augmented():
  config = _config()
  model = classifier.build_classifier(config, NUM_CLASSES, 'image')
  extractor = classifier.feature_extractor(model)
  images = np.random.default_rng(0).uniform(-1, 1, (10, 32, 32, 3)).astype(np.float32)
  weak = model.get_layer(classifier.AUGMENTATION_LAYER)
  views = feature_cache.compute_views(
      extractor, iter([images[:5], images[5:]]), [None, feature_cache.mirror, weak, weak])
  assert views.shape == (4, 10, extractor.output_shape[-1])
  scale = np.abs(views[0]).max()
  np.testing.assert_allclose(views[0], extractor.predict(images, verbose=0),
                             atol=1e-5 * scale)
  np.testing.assert_allclose(views[1], extractor.predict(images[:, :, ::-1], verbose=0),
                             atol=1e-5 * scale)
  assert np.abs(views[2] - views[0]).max() > 1e-2 * scale   # augmented != clean
  assert np.abs(views[2] - views[3]).max() > 1e-2 * scale   # each view draws anew


def test_feature_cache_reports_progress_on_long_passes(monkeypatch, caplog):
  monkeypatch.setattr(feature_cache, 'PROGRESS_SECONDS', 0)
  model = classifier.build_classifier(_config(), NUM_CLASSES, 'image')
  images = np.zeros((3, 32, 32, 3), np.float32)
  with caplog.at_level(logging.INFO):
    feature_cache.Embedder(classifier.feature_extractor(model)).compute_views(
        iter([images, images]), [None], 'labeled images', total=6)
  progress = [r.getMessage() for r in caplog.records if 'so far' in r.getMessage()]
  assert [line.split(' x ')[0] for line in progress] == [
      'Feature cache: 3 of 6 labeled images', 'Feature cache: 6 of 6 labeled images']
  assert 's left)' in progress[0] and 'left' not in progress[1]


def test_an_embedder_traces_each_view_once_across_passes():
  model = classifier.build_classifier(_config(), NUM_CLASSES, 'image')
  traces = []

  def counted(images, training=True):  # pylint: disable=unused-argument
    traces.append(images.shape[0])        # Python runs only while tracing
    return images

  embedder = feature_cache.Embedder(classifier.feature_extractor(model))
  images = np.zeros((3, 32, 32, 3), np.float32)
  for batches in ([images], [images, images[:1]]):   # another pass, another size
    embedder.compute_views(iter(batches), [counted, None, counted])
  assert traces == [None]


def test_feature_cache_refuses_an_empty_split():
  config = _config()
  model = classifier.build_classifier(config, NUM_CLASSES, 'image')
  with pytest.raises(ValueError, match='No unlabeled images'):
    feature_cache.compute_views(classifier.feature_extractor(model), iter([]), [None],
                                'unlabeled images')


def test_feature_normalization_is_centred_unit_length_and_exported_as_a_weight():
  features, _ = _clusters(20, seed=1)
  layer = classifier.FeatureNormalization()
  layer.adapt(features)
  normalized = layer(features).numpy()
  np.testing.assert_allclose(np.linalg.norm(normalized, axis=-1), 1.0, rtol=1e-5)
  power = np.sqrt(features + 1e-6)
  np.testing.assert_allclose(layer.get_weights()[0], power.mean(0), rtol=1e-5)
  expected = power - power.mean(0)
  np.testing.assert_allclose(
      normalized, expected / np.linalg.norm(expected, axis=-1, keepdims=True), atol=1e-5)


def test_head_is_the_cross_validated_logistic_regression_and_never_reads_eval():
  features, labels = _clusters(20, seed=1, spread=0.6)
  views = np.stack([features, features + 0.05])
  test, test_labels = _clusters(50, seed=2, spread=0.6)
  model = _head_model()
  history, out_of_fold = head_lib.fit_head(model, head_lib.LabeledViews(views, labels),
                                           _config('training.cv_folds=4'))
  assert history['cv_folds'] == 4
  # Every image held out once: its probabilities come from a head fitted without it.
  np.testing.assert_allclose(out_of_fold.sum(axis=1), 1.0, atol=1e-5)
  assert np.mean(out_of_fold.argmax(axis=1) == labels) >= 0.9
  grid = history['regularization']
  assert len(grid['cv_accuracy']) == len(head_lib.REGULARIZATION_GRID)
  assert grid['chosen'] == head_lib.REGULARIZATION_GRID[int(np.argmax(grid['cv_accuracy']))]
  assert _accuracy(model, test, test_labels) >= 0.9
  # The Keras head computes what the fitted regression does.
  normalized = head_lib.normalized(model, test)
  kernel, bias = model.get_layer(classifier.PROBABILITIES_LAYER).get_weights()
  np.testing.assert_allclose(model.predict(test, verbose=0),
                             head_lib.LinearHead(kernel, bias).probabilities(normalized),
                             atol=1e-5)
  assert 'unlabeled' not in history


def test_folds_are_repeated_only_while_the_train_split_is_small():
  """Three shuffles of the folds where one shuffle's verdict is noise; one
  past REPEATED_CV_MAX_IMAGES, where every fit costs more."""
  config = _config('training.cv_folds=4')
  for per_class, repeats in ((20, head_lib.CV_REPEATS),
                             (head_lib.REPEATED_CV_MAX_IMAGES // NUM_CLASSES + 1, 1)):
    features, labels = _clusters(per_class, seed=1)
    training_set = head_lib.TrainingSet(features[np.newaxis], labels, None, NUM_CLASSES,
                                        config)
    folds = training_set.folds(config)
    assert training_set.repeats == repeats and len(folds) == 4 * repeats
    for _, held_out in folds[:4]:   # one shuffle holds every image out once
      assert np.bincount(labels[held_out]).min() >= per_class // 4


def test_head_falls_back_without_cross_validation_when_a_class_has_one_image():
  features, labels = _clusters(4, seed=1)
  keep = np.r_[0, 4:12]                        # class 0 keeps a single image
  history, _ = head_lib.fit_head(
      _head_model(), head_lib.LabeledViews(features[keep][np.newaxis], labels[keep]),
      _config(), unlabeled=_clusters(10, seed=3)[0])
  assert history['cv_folds'] == 0
  assert history['regularization']['chosen'] == head_lib.FALLBACK_REGULARIZATION
  assert history['unlabeled']['used'] is False
  assert 'single labeled image' in history['unlabeled']['reason']


def test_class_weights_balance_an_imbalanced_split():
  weights = head_lib.class_weights(np.array([0] * 8 + [1] * 2), 3)
  np.testing.assert_allclose(weights, [0.625, 2.5, 0.0])


def test_two_class_regression_fills_both_softmax_columns():
  features, labels = _clusters(10, seed=1)
  two = labels < 2
  head = head_lib.fit_logistic(features[two], labels[two], np.ones(two.sum()), 1.0,
                               NUM_CLASSES, seed=0)
  predicted = head.probabilities(features[two]).argmax(-1)
  assert np.mean(predicted == labels[two]) == 1.0
  assert head.probabilities(features[two])[:, 2].max() < 1e-6   # absent class


def test_self_training_is_used_when_the_unlabeled_clusters_carry_the_information():
  """Two labels per class from wide clusters: the pool fills in their shapes,
  cross-validation on the labels sees the gain, and the test images confirm it."""
  labeled, labels = _clusters(2, seed=1, spread=1.2)
  pool, _ = _clusters(200, seed=11, spread=1.2)
  test, test_labels = _clusters(200, seed=21, spread=1.2)
  config = _config('training.cv_folds=2')
  supervised, semi = _head_model(), _head_model()
  head_lib.fit_head(supervised, head_lib.LabeledViews(labeled[np.newaxis], labels), config)
  history, _ = head_lib.fit_head(semi, head_lib.LabeledViews(labeled[np.newaxis], labels),
                              config, unlabeled=pool)
  decision = history['unlabeled']
  assert decision['images'] == 600
  assert decision['used'] is True, decision
  assert decision['cv_accuracy_self_training'] >= decision['cv_accuracy_supervised']
  assert decision['reason'].startswith('used: self-training scored')
  # The last round pseudo-labels pseudo_label_fraction of the pool, per class.
  assert decision['pseudo_labels'] == 3 * int(np.ceil(0.8 * 600 / 3))
  assert (_accuracy(semi, test, test_labels) >=
          _accuracy(supervised, test, test_labels) + 0.05)


def test_unlabeled_images_of_no_use_are_left_out_and_the_reason_given():
  """A pool of one class only: pseudo-labels would pull every image towards it."""
  labeled, labels = _clusters(6, seed=1, spread=0.9)
  pool = _clusters(100, seed=2, spread=0.9)[0][:100]        # class 0 only
  history, _ = head_lib.fit_head(
      _head_model(), head_lib.LabeledViews(labeled[np.newaxis], labels),
      _config('training.cv_folds=3'), unlabeled=pool)
  decision = history['unlabeled']
  assert decision['used'] is False
  assert decision['pseudo_labels'] == 0
  assert decision['reason'].startswith('not used: self-training lowered')


def test_learning_curve_grows_with_labels_and_its_fit_extrapolates():
  features, labels = _clusters(30, seed=1, spread=1.2)
  history, _ = head_lib.fit_head(_head_model(), head_lib.LabeledViews(features[np.newaxis],
                                                                   labels),
                              _config('training.cv_folds=5'))
  curve = history['learning_curve']
  sizes = [point['labels_per_class'] for point in curve['points']]
  assert sizes == sorted(sizes) and sizes[0] == pytest.approx(6) and sizes[-1] == 24
  assert all(len(point['class_recall']) == NUM_CLASSES for point in curve['points'])
  assert curve['points'][-1]['accuracy'] > curve['points'][0]['accuracy']
  assert curve['fit']['slope'] > 0
  assert (learning_curve.expected_accuracy(curve, 60) >
          learning_curve.expected_accuracy(curve, 30))
