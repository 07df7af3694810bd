"""Tests for colorize_jax.metrics and colorize_jax.inception."""

import math

import numpy as np
import pytest
from skimage import metrics as sk_metrics

from colorize_jax import inception
from colorize_jax import metrics


def _structured_pair(h: int, w: int, seed: int = 0):
  """A smooth image with edges and a blurred, noisy, tinted copy; uint8 [2, h, w, 3]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  r = 255 * (xx / max(w - 1, 1))
  g = 255 * (yy / max(h - 1, 1))
  b = np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 3) ** 2,
               220.0, 30.0)
  a = np.stack([r, g, b], -1)
  blurred = (a + np.roll(a, 1, 0) + np.roll(a, 1, 1)) / 3
  noisy = blurred + rng.normal(0, 12, a.shape) + np.array([10.0, -5.0, 0.0])
  a8 = np.clip(a, 0, 255).astype(np.uint8)
  b8 = np.clip(noisy, 0, 255).astype(np.uint8)
  # Second image of the batch: pure noise pair, to mix regimes in one call.
  c8 = rng.integers(0, 256, a.shape, dtype=np.uint8)
  d8 = np.clip(c8.astype(int) + rng.integers(-50, 51, a.shape), 0, 255).astype(
      np.uint8)
  return np.stack([a8, c8]), np.stack([b8, d8])


# ------------------------------------------------------------------- PSNR


@pytest.mark.parametrize('d', [1, 5, 40])
def test_psnr_of_constant_offset(d):
  """A constant error of d levels gives 20 log10(255 / d), for uint8 and float."""
  rng = np.random.default_rng(d)
  a = rng.integers(0, 256 - d, (2, 9, 13, 3), dtype=np.uint8)
  b = a + np.uint8(d)
  expected = 20 * math.log10(255 / d)
  np.testing.assert_allclose(metrics.psnr(a, b), expected, atol=1e-4)
  np.testing.assert_allclose(
      metrics.psnr(a.astype(np.float32) / 255, b.astype(np.float32) / 255),
      expected, atol=1e-3)
  # uint16 is on its own full scale (it was taken as 0..255), other integers are refused.
  np.testing.assert_allclose(metrics.psnr(a.astype(np.uint16) * 257, b.astype(np.uint16) * 257),
                             expected, atol=1e-3)
  np.testing.assert_allclose(metrics.colorfulness(a.astype(np.uint16) * 257),
                             metrics.colorfulness(a), rtol=1e-5)
  with pytest.raises(ValueError, match='uint8, uint16 or float'):
    metrics.psnr(a.astype(np.int32), b.astype(np.int32))


def test_psnr_matches_skimage_on_noise():
  """PSNR per image equals skimage's peak_signal_noise_ratio with range 255."""
  a, b = _structured_pair(21, 34)
  ref = [sk_metrics.peak_signal_noise_ratio(a[i], b[i], data_range=255)
         for i in range(2)]
  np.testing.assert_allclose(metrics.psnr(a, b), ref, atol=1e-4)


def test_psnr_of_identical_images_is_capped():
  """Identical images give PSNR_MAX_DB (finite), and no value exceeds the cap."""
  a = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  np.testing.assert_array_equal(metrics.psnr(a, a), metrics.PSNR_MAX_DB)
  np.testing.assert_array_equal(metrics.psnr(a, a, max_db=60.0), 60.0)
  b = a.copy()
  b[0, 0, 0, 0] ^= 1   # one unit off: uncapped ~89 dB, above the 60 dB cap
  assert float(metrics.psnr(a, b, max_db=60.0)[0]) == 60.0
  assert 85 < float(metrics.psnr(a, b)[0]) < metrics.PSNR_MAX_DB


# ------------------------------------------------------------------- SSIM


@pytest.mark.parametrize('h,w', [(7, 7), (23, 37), (64, 48)])
def test_ssim_matches_skimage_defaults(h, w):
  """SSIM equals skimage's structural_similarity (7x7 uniform, sample cov) to 1e-4."""
  a, b = _structured_pair(h, w)
  ref = [sk_metrics.structural_similarity(a[i], b[i], channel_axis=-1,
                                          data_range=255) for i in range(2)]
  np.testing.assert_allclose(metrics.ssim(a, b), ref, atol=1e-4)


def test_ssim_matches_skimage_for_float_images():
  """Float images in [0, 1] give skimage's SSIM with data_range=1."""
  a, b = _structured_pair(23, 37, seed=1)
  af, bf = a.astype(np.float32) / 255, b.astype(np.float32) / 255
  ref = [sk_metrics.structural_similarity(af[i], bf[i], channel_axis=-1,
                                          data_range=1.0) for i in range(2)]
  np.testing.assert_allclose(metrics.ssim(af, bf), ref, atol=1e-4)


@pytest.mark.parametrize('h,w', [(11, 11), (23, 37)])
def test_ssim_matches_skimage_gaussian_wang_setting(h, w):
  """The Wang et al. setting (Gaussian sigma 1.5, population cov) matches skimage."""
  a, b = _structured_pair(h, w, seed=2)
  ref = [sk_metrics.structural_similarity(
      a[i], b[i], channel_axis=-1, data_range=255, gaussian_weights=True,
      sigma=1.5, use_sample_covariance=False) for i in range(2)]
  ours = metrics.ssim(a, b, gaussian_weights=True, sigma=1.5,
                      use_sample_covariance=False)
  np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_ssim_identical_is_one_and_small_images_are_rejected():
  """SSIM(x, x) = 1; an image smaller than the window is a clear ValueError."""
  a, _ = _structured_pair(7, 7)
  np.testing.assert_allclose(metrics.ssim(a, a), 1.0, atol=1e-6)
  with pytest.raises(ValueError, match='smaller than'):
    metrics.ssim(a[:, :6], a[:, :6])


# ---------------------------------------------------------------- ab errors


def _ab_pair():
  """Two 1x2 ab images with hand-computable errors."""
  true = np.zeros((2, 1, 2, 2), np.float32)
  pred = np.array([[[[3, 4], [0, 0]]],          # distances 5 and 0
                   [[[-6, 8], [1, 0]]]], np.float32)   # distances 10 and 1
  true[1, 0, 1] = [2, 0]    # image 2, pixel 2: pred (1, 0) vs true (2, 0)
  return pred, true


def test_ab_l1_and_l2_on_hand_values():
  """ab_l1 = mean |delta| over pixels and channels; ab_l2 = mean Euclidean distance."""
  pred, true = _ab_pair()
  # Image 1: |3|+|4|+0+0 over 4 values; image 2: |-6|+|8|+|-1|+0 over 4.
  np.testing.assert_allclose(metrics.ab_l1(pred, true), [7 / 4, 15 / 4])
  np.testing.assert_allclose(metrics.ab_l2(pred, true), [5 / 2, 11 / 2])


@pytest.mark.parametrize('form', ['mean', 'trapezoid'])
def test_auc_of_perfect_prediction_is_one(form):
  """A perfect ab prediction has AuC exactly 1 in both forms."""
  ab = np.random.default_rng(0).uniform(-110, 110, (2, 5, 6, 2))
  np.testing.assert_allclose(metrics.ab_auc(ab, ab, form=form), 1.0)


@pytest.mark.parametrize('d', [1, 37, 150, 151, 200])
def test_auc_of_constant_error(d):
  """A constant ab distance d gives (151 - d)/151 (mean) and (150.5 - d)/150 (trapezoid)."""
  # Integer ab values keep the distance exactly d in float32.
  true = np.random.default_rng(d).integers(-100, 100, (1, 4, 5, 2)).astype(
      np.float32)
  pred = true.copy()
  pred[..., 0] += d
  mean_expected = max(151 - d, 0) / 151
  trap_expected = max(150.5 - d, 0) / 150 if d <= 150 else 0.0
  np.testing.assert_allclose(metrics.ab_auc(pred, true), [mean_expected],
                             atol=1e-6)
  np.testing.assert_allclose(metrics.ab_auc(pred, true, form='trapezoid'),
                             [trap_expected], atol=1e-6)


def test_auc_closed_form_equals_threshold_sweep():
  """The closed form equals the explicit sweep over thresholds 0..150 (both forms)."""
  rng = np.random.default_rng(3)
  true = rng.uniform(-110, 110, (3, 8, 9, 2))
  pred = true + rng.normal(0, 60, true.shape)
  pred[0, 0, 0] = true[0, 0, 0]   # include an exact hit (threshold 0)
  d = np.linalg.norm(pred - true, axis=-1).reshape(3, -1)
  curve = np.stack([(d <= t).mean(axis=1) for t in range(151)], axis=1)
  np.testing.assert_allclose(metrics.ab_auc(pred, true), curve.mean(axis=1),
                             atol=1e-5)
  np.testing.assert_allclose(metrics.ab_auc(pred, true, form='trapezoid'),
                             np.trapezoid(curve, axis=1) / 150, atol=1e-5)


# ------------------------------------------------------------ colorfulness


def test_colorfulness_of_gray_image_is_zero():
  """Any gray image (R = G = B) has CF 0 in both variants and both dtypes."""
  v = np.random.default_rng(0).integers(0, 256, (2, 6, 7, 1), dtype=np.uint8)
  gray = np.repeat(v, 3, axis=-1)
  for absolute in (False, True):
    np.testing.assert_allclose(
        metrics.colorfulness(gray, absolute=absolute), 0.0, atol=1e-4)
    np.testing.assert_allclose(
        metrics.colorfulness(gray.astype(np.float32) / 255, absolute=absolute),
        0.0, atol=1e-4)


def test_colorfulness_of_red_blue_image():
  """Half red, half blue: CF by hand, signed (Hasler) and absolute (DDColor)."""
  img = np.zeros((1, 4, 6, 3), np.uint8)
  img[:, :, :3, 0] = 255   # red: rg = 255, yb = 127.5
  img[:, :, 3:, 2] = 255   # blue: rg = 0, yb = -255
  # Signed: rg mean 127.5 std 127.5; yb mean -63.75 std 191.25.
  signed = math.hypot(127.5, 191.25) + 0.3 * math.hypot(127.5, 63.75)
  # Absolute: rg as above; |yb| = 127.5 and 255: mean 191.25, std 63.75.
  absolute = math.hypot(127.5, 63.75) + 0.3 * math.hypot(127.5, 191.25)
  np.testing.assert_allclose(metrics.colorfulness(img), [signed], rtol=1e-5)
  np.testing.assert_allclose(metrics.colorfulness(img, absolute=True),
                             [absolute], rtol=1e-5)
  np.testing.assert_allclose(
      metrics.colorfulness(img.astype(np.float32) / 255), [signed], rtol=1e-5)


def test_colorfulness_absolute_matches_ddcolor_formula():
  """absolute=True reproduces DDColor's calculate_cf (|rg|, |yb|, np.std) on random images."""
  img = np.random.default_rng(4).integers(0, 256, (2, 10, 12, 3),
                                          dtype=np.uint8)
  ref = []
  for im in img.astype(np.float64):
    r, g, b = im[..., 0], im[..., 1], im[..., 2]
    rg, yb = np.abs(r - g), np.abs(0.5 * (r + g) - b)
    ref.append(np.hypot(rg.std(), yb.std())
               + 0.3 * np.hypot(rg.mean(), yb.mean()))
  np.testing.assert_allclose(metrics.colorfulness(img, absolute=True), ref,
                             rtol=1e-5)


# ---------------------------------------------------- dataset accumulation


def test_image_metrics_accumulate_with_mask():
  """ImageMetrics means equal plain means over unmasked images; padding is ignored."""
  rng = np.random.default_rng(5)
  n = 5
  rgb_true = rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
  rgb_pred = np.clip(rgb_true + rng.integers(-30, 31, rgb_true.shape), 0,
                     255).astype(np.uint8)
  ab_true = rng.uniform(-110, 110, (n, 12, 12, 2)).astype(np.float32)
  ab_pred = ab_true + rng.normal(0, 20, ab_true.shape).astype(np.float32)
  expected = {k: np.asarray(v).mean() for k, v in metrics.image_metrics(
      rgb_pred, rgb_true, ab_pred, ab_true).items()}

  totals = metrics.ImageMetrics.empty()
  # Batches of 3: the second holds 2 real images and 1 garbage padding row.
  pad = lambda x: np.concatenate([x, 255 - x[:1]])
  for sl, mask in ((slice(0, 3), np.ones(3, bool)),
                   (slice(3, 5), np.array([True, True, False]))):
    arrays = [rgb_pred[sl], rgb_true[sl], ab_pred[sl], ab_true[sl]]
    if len(mask) > sl.stop - sl.start:
      arrays = [pad(x) for x in arrays]
    values = metrics.image_metrics(*arrays)
    totals = totals.merge(
        metrics.ImageMetrics.single_from_model_output(**values, mask=mask))
  got = totals.compute()
  for k, v in expected.items():
    np.testing.assert_allclose(got[k], v, rtol=1e-5, err_msg=k)
  np.testing.assert_allclose(
      got['delta_cf'], abs(expected['cf'] - expected['cf_real']), rtol=1e-4)
  np.testing.assert_allclose(
      got['delta_cf_abs'], abs(expected['cf_abs'] - expected['cf_abs_real']),
      rtol=1e-4)


# -------------------------------------------------------------------- FID


def test_frechet_distance_of_known_gaussians():
  """Diagonal Gaussians: FID = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2 = 7."""
  mu1, mu2 = np.zeros(2), np.array([1.0, 2.0])
  s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 9.0])
  for method in ('sqrtm', 'eigh'):
    assert inception.frechet_distance(mu1, s1, mu2, s2, method=method) == (
        pytest.approx(7.0, abs=1e-9))


def test_frechet_distance_of_non_commuting_covariances():
  """For 2x2 covariances Tr sqrt(S1 S2) = sqrt(Tr(S1 S2) + 2 sqrt(det(S1 S2))), so with
  equal means FID = Tr S1 + Tr S2 - 2 sqrt(10 + 2 sqrt 12) here (S1 S2 is not
  symmetric: a square root of it taken as if it were is wrong)."""
  s1, s2 = np.array([[2.0, 1.0], [1.0, 2.0]]), np.diag([1.0, 4.0])
  expected = 4.0 + 5.0 - 2.0 * np.sqrt(10.0 + 2.0 * np.sqrt(12.0))
  for method in ('sqrtm', 'eigh'):
    assert inception.frechet_distance(np.zeros(2), s1, np.zeros(2), s2, method=method) == (
        pytest.approx(expected, abs=1e-9))


def test_fid_self_zero_different_positive_and_order_invariant():
  """FID(X, X) ~ 0, FID(X, Y) > 0, and streaming order/batching does not matter."""
  rng = np.random.default_rng(6)
  dim = 16
  x = rng.normal(size=(300, dim))
  y = rng.normal(size=(200, dim)) * 1.2 + 0.3
  sx = inception.FeatureStats.empty(dim).update(x)
  sy = inception.FeatureStats.empty(dim).update(y)
  np.testing.assert_allclose(sx.mean(), x.mean(axis=0), atol=1e-12)
  np.testing.assert_allclose(sx.cov(), np.cov(x, rowvar=False), atol=1e-12)
  assert abs(sx.fid(sx)) < 1e-8
  fid = sx.fid(sy)
  assert fid > 1.0
  shuffled = x[rng.permutation(len(x))]
  # Uneven batches, merged from two shards, with padding rows masked out.
  shard1 = inception.FeatureStats.empty(dim)
  shard1.update(np.concatenate([shuffled[:7], np.full((3, dim), 1e6)]),
                mask=np.array([True] * 7 + [False] * 3))
  shard1.update(shuffled[7:150])
  shard2 = inception.FeatureStats.empty(dim).update(shuffled[150:])
  merged = shard1.merge(shard2)
  assert merged.n == len(x)
  assert merged.fid(sy) == pytest.approx(fid, rel=1e-9)
  assert sx.fid(sy, method='eigh') == pytest.approx(fid, rel=1e-8)


def test_fid_with_fewer_samples_than_dimensions_is_finite():
  """Singular covariances (N < D) still give a finite FID near 0 against itself."""
  x = np.random.default_rng(7).normal(size=(10, 32))
  s = inception.FeatureStats.empty(32).update(x)
  assert abs(s.fid(s)) < 1e-3
  with pytest.raises(ValueError, match='2 vectors'):
    inception.FeatureStats.empty(32).update(x[:1]).cov()


# --------------------------------------------------------------------- IS


def test_inception_score_bounds_and_extremes():
  """IS = 1 for identical predictions, K for evenly spread confident classes, else in [1, K]."""
  k, splits = 8, 4
  uniform = np.full((40, k), 1.0 / k)
  assert inception.inception_score(uniform, splits) == pytest.approx((1.0, 0.0))
  same_class = np.tile(np.eye(k)[2], (40, 1))
  assert inception.inception_score(same_class, splits) == pytest.approx(
      (1.0, 0.0))
  # Every split holds each of the K classes once, predicted with certainty.
  spread = np.tile(np.eye(k), (splits, 1))
  mean, std = inception.inception_score(spread, splits)
  assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-9)
  probs = np.random.default_rng(8).dirichlet(np.full(k, 0.3), size=100)
  mean, _ = inception.inception_score(probs, splits=5)
  assert 1.0 < mean < k
  with pytest.raises(ValueError):
    inception.inception_score(probs[:3], splits=10)


def test_inception_score_by_hand_on_uneven_parts():
  """7 predictions in 2 parts (3 and 4): part one has p(y) = (2/3, 1/3) and KLs log 1.5,
  log 1.5, log 3, so its score is exp(mean KL) = 6.75^(1/3) (not the mean of exp(KL),
  2.0); part two predicts (1/2, 1/2) throughout, whose own p(y) makes its score 1 (over
  all seven rows p(y) would differ from each part's)."""
  probs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]] + [[0.5, 0.5]] * 4)
  first = 6.75 ** (1.0 / 3.0)
  mean, std = inception.inception_score(probs, splits=2)
  assert mean == pytest.approx((first + 1.0) / 2, abs=1e-12)
  assert std == pytest.approx((first - 1.0) / 2, abs=1e-12)


# ------------------------------------------------------------ InceptionV3


@pytest.fixture(scope='module')
def random_scorer():
  """InceptionV3 with random weights (building it takes a few seconds)."""
  return inception.InceptionScorer.create(weights=None, batch_size=2)


def test_inception_features_shapes_probs_and_batching(random_scorer):
  """One pass gives probs [N, 1000] summing to 1 and pool features [N, 2048] >= 0;
  chunking into batches keeps rows in order and float [0, 1] input equals uint8."""
  rgb = np.random.default_rng(9).integers(0, 256, (3, 40, 56, 3),
                                          dtype=np.uint8)
  out = random_scorer.features(rgb)   # chunks of 2 + 1
  assert out.probs.shape == (3, inception.NUM_CLASSES)
  assert out.pool.shape == (3, inception.FEATURE_DIM)
  np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-5)
  assert np.isfinite(out.pool).all() and (out.pool >= 0).all()
  single = random_scorer.features(rgb[2:3].astype(np.float32) / 255)
  np.testing.assert_allclose(single.pool, out.pool[2:3], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(single.probs, out.probs[2:3], atol=1e-6)
  deep = random_scorer.features(rgb[2:3].astype(np.uint16) * 257)   # was fed 257x too bright
  np.testing.assert_allclose(deep.pool, out.pool[2:3], rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='uint8, uint16 or float'):
    random_scorer.features(rgb.astype(np.int32))


def test_missing_weights_raise_inception_unavailable(tmp_path):
  """Missing or unloadable weights raise InceptionUnavailable naming the file."""
  with pytest.raises(inception.InceptionUnavailable, match='does not exist'):
    inception.InceptionScorer.create(weights=str(tmp_path / 'nope.h5'))
  # 'imagenet' without a cached file and with downloading disabled: no network.
  with pytest.raises(inception.InceptionUnavailable,
                     match=str(tmp_path / 'models')):
    inception.InceptionScorer.create(weights='imagenet', cache_dir=str(tmp_path),
                                     download_timeout_s=None)
  corrupt = tmp_path / 'corrupt.weights.h5'
  corrupt.write_bytes(b'not an hdf5 file')
  with pytest.raises(inception.InceptionUnavailable, match='corrupt'):
    inception.InceptionScorer.create(weights=str(corrupt))
