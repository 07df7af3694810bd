"""Per-image colorization metrics: PSNR, SSIM, ab errors, AuC, colorfulness.

All functions take batches and return one value per image, shape [N], so that
an evaluation loop can average them over a dataset with a validity mask
(padded last batch) through `ImageMetrics`. They are pure `jax.numpy` and
jitted, so they run on the accelerator next to the generator.

Input conventions (those of `color`):
  * RGB: uint8 [N, H, W, 3] in 0..255, or float [N, H, W, 3] in [0, 1].
  * ab:  float [N, H, W, 2] in [-110, 110] (CIELAB D65/2deg).

Inception Score and FID need an ImageNet classifier and live in `inception.py`.
"""

import functools
from typing import Any

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import numpy as np

from colorize_jax import color

# PSNR of two identical images (MSE = 0) and the ceiling of every PSNR value.
# A finite cap keeps dataset means finite; 100 dB is far above any real
# colorization (uint8 images differing in a single unit of a single pixel of a
# 256x256 RGB image already reach ~101 dB, i.e. "identical" for our purposes).
PSNR_MAX_DB = 100.0

# Zhang et al. (2016), sec. 3.1: thresholds on the ab distance swept 0..150.
AUC_MAX_THRESHOLD = 150


def _data_range(x: jax.Array, data_range: float | None) -> float:
  """The value range of an RGB array (`color.full_scale`): 255 for uint8, 65535 for
  uint16, 1.0 for floats."""
  if data_range is not None:
    return float(data_range)
  return color.full_scale(x.dtype)


def _check_pair(a: jax.Array, b: jax.Array, channels: int, name: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f'{name}: shapes differ: {a.shape} vs {b.shape}.')
  if a.ndim != 4 or a.shape[-1] != channels:
    raise ValueError(
        f'{name}: expected a batch [N, H, W, {channels}], got shape {a.shape}.')


@functools.partial(jax.jit, static_argnames=('data_range', 'max_db'))
def psnr(a: jax.Array, b: jax.Array, *, data_range: float | None = None,
         max_db: float = PSNR_MAX_DB) -> jax.Array:
  """Peak signal-to-noise ratio of RGB images, per image.

  PSNR = 10 log10(R^2 / MSE), the MSE taken over all pixels and the 3
  channels of one image (as `skimage.metrics.peak_signal_noise_ratio`).
  Identical images (MSE = 0) give `max_db` rather than inf, and every value is
  capped at `max_db`, so that dataset means stay finite.

  Args:
    a: RGB uint8 [N, H, W, 3] in 0..255, or float [N, H, W, 3] in [0, 1].
    b: the same shape (and range) as `a`.
    data_range: R; default 255 for integer dtypes, 1.0 for floats.
    max_db: value for identical images and upper bound of the result.

  Returns:
    float32 [N], PSNR in dB, in (-inf, max_db].
  """
  _check_pair(a, b, 3, 'psnr')
  r = _data_range(a, data_range)
  # Scaling to [0, 1] first keeps float32 sums of squared uint8 errors exact
  # enough (errors of 255^2 summed over 2e5 pixels would exceed 2^24).
  d = a.astype(jnp.float32) / r - b.astype(jnp.float32) / r
  mse = jnp.mean(jnp.square(d), axis=(1, 2, 3))
  db = 10.0 * jnp.log10(1.0 / jnp.where(mse > 0, mse, 1.0))
  return jnp.where(mse > 0, jnp.minimum(db, max_db), max_db)


def _gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
  """1-D Gaussian as scipy.ndimage.gaussian_filter builds it (float64)."""
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 / (sigma * sigma) * x * x)
  return w / w.sum()


def _filter_valid(x: jax.Array, taps: np.ndarray) -> jax.Array:
  """Separable correlation over axes 1 and 2, 'valid' region only.

  skimage filters with border padding and then crops (win_size - 1) / 2 pixels
  off every side; that crop leaves exactly the positions whose window lies
  inside the image, so border handling never matters and a valid correlation
  is the same computation. Shifted slices instead of a convolution keep full
  float32 precision (GPU convolutions may round through TF32).
  """
  k = len(taps)
  h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
  y = sum(float(taps[i]) * x[:, i:i + h] for i in range(k))
  return sum(float(taps[i]) * y[:, :, i:i + w] for i in range(k))


@functools.partial(
    jax.jit,
    static_argnames=('data_range', 'win_size', 'gaussian_weights', 'sigma',
                     'use_sample_covariance', 'k1', 'k2'))
def ssim(a: jax.Array, b: jax.Array, *, data_range: float | None = None,
         win_size: int = 7, gaussian_weights: bool = False, sigma: float = 1.5,
         use_sample_covariance: bool = True, k1: float = 0.01,
         k2: float = 0.03) -> jax.Array:
  """Mean structural similarity of RGB images, per image.

  Matches `skimage.metrics.structural_similarity(a[i], b[i], channel_axis=-1,
  data_range=R, ...)` with the same keyword arguments (tested to 1e-4): SSIM
  per channel, averaged over the valid region (window fully inside the image)
  and then over channels. The defaults are skimage's: a 7x7 uniform window with
  sample covariance. Wang et al. (2004)'s setting is `gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False` (an 11x11 Gaussian window, truncated
  at 3.5 sigma, as in skimage).

  Args:
    a: RGB uint8 [N, H, W, 3] in 0..255, or float [N, H, W, 3] in [0, 1];
      H and W at least the window size (7, or 11 for the Gaussian window).
    b: the same shape (and range) as `a`.
    data_range: R; default 255 for integer dtypes, 1.0 for floats.
    win_size: odd side of the uniform window (ignored with Gaussian weights,
      whose size follows from `sigma`).
    gaussian_weights: Gaussian instead of uniform window weights.
    sigma: standard deviation of the Gaussian window.
    use_sample_covariance: normalise (co)variances by NP - 1 instead of NP,
      NP being the number of pixels in the window.
    k1, k2: SSIM stabilising constants; C1 = (k1 R)^2, C2 = (k2 R)^2.

  Returns:
    float32 [N], mean SSIM in [-1, 1] (1 for identical images).
  """
  _check_pair(a, b, 3, 'ssim')
  if gaussian_weights:
    taps = _gaussian_taps(sigma, truncate=3.5)
  else:
    if win_size % 2 != 1:
      raise ValueError(f'ssim: win_size must be odd, got {win_size}.')
    taps = np.full(win_size, 1.0 / win_size)
  k = len(taps)
  if a.shape[1] < k or a.shape[2] < k:
    raise ValueError(
        f'ssim: images of {a.shape[1]}x{a.shape[2]} are smaller than the '
        f'{k}x{k} window.')
  cov_norm = k * k / (k * k - 1.0) if use_sample_covariance else 1.0

  r = _data_range(a, data_range)
  x = a.astype(jnp.float32) / r
  y = b.astype(jnp.float32) / r
  # (Co)variances are invariant to a constant shift; removing each channel's
  # mean first avoids the float32 cancellation in E[x^2] - E[x]^2.
  mx = jnp.mean(x, axis=(1, 2), keepdims=True)
  my = jnp.mean(y, axis=(1, 2), keepdims=True)
  x, y = x - mx, y - my
  # One filter call on the five maps stacked along channels: a smaller graph
  # (faster to compile) than five calls.
  moments = _filter_valid(
      jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), taps)
  ux, uy, uxx, uyy, uxy = jnp.split(moments, 5, axis=-1)
  vx = cov_norm * (uxx - ux * ux)
  vy = cov_norm * (uyy - uy * uy)
  vxy = cov_norm * (uxy - ux * uy)
  ux, uy = ux + mx, uy + my
  c1, c2 = k1 * k1, k2 * k2   # (K R)^2 with R = 1 after scaling
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)
       / ((ux * ux + uy * uy + c1) * (vx + vy + c2)))
  return jnp.mean(s, axis=(1, 2, 3))


def _ab_distance(ab_pred: jax.Array, ab_true: jax.Array) -> jax.Array:
  """Euclidean distance in the ab plane, [N, H, W]."""
  _check_pair(ab_pred, ab_true, 2, 'ab metric')
  d = ab_pred.astype(jnp.float32) - ab_true.astype(jnp.float32)
  return jnp.sqrt(jnp.sum(jnp.square(d), axis=-1))


@jax.jit
def ab_l1(ab_pred: jax.Array, ab_true: jax.Array) -> jax.Array:
  """Mean absolute ab error per image, over pixels and both channels.

  This is the generator's L1 term in ab units (the training loss on ab / 110,
  times 110); the per-pixel L1 norm |da| + |db| would be twice this value.

  Args:
    ab_pred: predicted ab, float [N, H, W, 2] in [-110, 110].
    ab_true: true ab, the same shape.

  Returns:
    float32 [N], in [0, 220].
  """
  _check_pair(ab_pred, ab_true, 2, 'ab_l1')
  d = ab_pred.astype(jnp.float32) - ab_true.astype(jnp.float32)
  return jnp.mean(jnp.abs(d), axis=(1, 2, 3))


@jax.jit
def ab_l2(ab_pred: jax.Array, ab_true: jax.Array) -> jax.Array:
  """Mean per-pixel Euclidean ab distance sqrt(da^2 + db^2) per image.

  Not a root-mean-square: distances are averaged, not squared errors.

  Args:
    ab_pred: predicted ab, float [N, H, W, 2] in [-110, 110].
    ab_true: true ab, the same shape.

  Returns:
    float32 [N], in [0, 220 sqrt(2)].
  """
  return jnp.mean(_ab_distance(ab_pred, ab_true), axis=(1, 2))


@functools.partial(jax.jit, static_argnames=('max_threshold', 'form'))
def ab_auc(ab_pred: jax.Array, ab_true: jax.Array, *,
           max_threshold: int = AUC_MAX_THRESHOLD,
           form: str = 'mean') -> jax.Array:
  """Area under the cumulative ab-error curve (Zhang et al. 2016, "AuC").

  Zhang et al., sec. 3.1: the fraction of pixels whose Euclidean ab distance
  to the truth is within a threshold, swept over thresholds 0..150, integrated
  and normalised. Their text does not say how; here the thresholds are the
  integers t = 0..T (T = `max_threshold`) and:

    * form='mean' (default): the mean of the curve over the T + 1 thresholds,
      AuC = 1/(T+1) sum_t frac(d <= t). A constant distance d (integer,
      0 <= d <= T) gives (T + 1 - d) / (T + 1).
    * form='trapezoid': the trapezoid rule over [0, T] divided by T. A constant
      distance d (integer, 0 < d <= T) gives (T + 0.5 - d) / T.

  Both give 1 for a perfect prediction and 0 when every pixel is further than
  T. The curve is computed per image; with images of equal size the mean of
  the per-image values equals the AuC of all pixels pooled.

  Args:
    ab_pred: predicted ab, float [N, H, W, 2] in [-110, 110].
    ab_true: true ab, the same shape.
    max_threshold: T, the largest threshold (150 in Zhang et al.).
    form: 'mean' or 'trapezoid', see above.

  Returns:
    float32 [N], in [0, 1].
  """
  d = _ab_distance(ab_pred, ab_true)
  t = float(max_threshold)
  # Closed form instead of a [pixels x thresholds] comparison: a pixel at
  # distance d is counted by the thresholds ceil(d)..T.
  count = jnp.clip(t + 1.0 - jnp.ceil(d), 0.0, t + 1.0)
  if form == 'mean':
    per_pixel = count / (t + 1.0)
  elif form == 'trapezoid':
    # Trapezoid: sum_t f(t) minus half of each end point, over the width T.
    ends = 0.5 * ((d <= 0).astype(jnp.float32) + (d <= t).astype(jnp.float32))
    per_pixel = (count - ends) / t
  else:
    raise ValueError(f"ab_auc: form must be 'mean' or 'trapezoid', got {form!r}.")
  return jnp.mean(per_pixel, axis=(1, 2))


@functools.partial(jax.jit, static_argnames=('absolute',))
def colorfulness(rgb: jax.Array, *, absolute: bool = False) -> jax.Array:
  """Hasler & Suesstrunk (2003) colorfulness M3 per image, on RGB in 0..255.

  rg = R - G, yb = (R + G) / 2 - B, and
  CF = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2), with
  population standard deviations (numpy's default). A gray image gives 0.

  `absolute=True` takes |rg| and |yb| before the statistics, as the widely
  copied pyimagesearch code does; DDColor's `calculate_cf` (and so the CF and
  delta-CF figures in shared/docs/peers.md) uses that variant. The two differ
  for any image with colours on both sides of an opponent axis.

  Args:
    rgb: uint8 [N, H, W, 3] in 0..255, or float [N, H, W, 3] in [0, 1]
      (scaled by 255 so that both give the same value).
    absolute: use the DDColor / pyimagesearch variant.

  Returns:
    float32 [N], >= 0 (about 0..110 on natural photos).
  """
  if rgb.ndim != 4 or rgb.shape[-1] != 3:
    raise ValueError(f'colorfulness: expected [N, H, W, 3], got {rgb.shape}.')
  x = rgb.astype(jnp.float32) * (255.0 / _data_range(rgb, None))
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  rg = r - g
  yb = 0.5 * (r + g) - b
  if absolute:
    rg, yb = jnp.abs(rg), jnp.abs(yb)
  axes = (1, 2)
  mean_rg, mean_yb = jnp.mean(rg, axis=axes), jnp.mean(yb, axis=axes)
  var_rg, var_yb = jnp.var(rg, axis=axes), jnp.var(yb, axis=axes)
  return jnp.sqrt(var_rg + var_yb) + 0.3 * jnp.sqrt(
      jnp.square(mean_rg) + jnp.square(mean_yb))


@jax.jit
def image_metrics(rgb_pred: jax.Array, rgb_true: jax.Array,
                  ab_pred: jax.Array, ab_true: jax.Array) -> dict[str, jax.Array]:
  """All per-image metrics of a batch of colorizations, in one jitted call.

  Args:
    rgb_pred: colorized RGB, uint8 [N, H, W, 3] or float [N, H, W, 3] in [0, 1].
    rgb_true: ground-truth RGB, the same shape and dtype.
    ab_pred: predicted ab, float [N, H, W, 2] in [-110, 110].
    ab_true: true ab, the same shape.

  Returns:
    A dict of float32 [N] arrays, the keys of `ImageMetrics`: psnr (dB, capped
    at PSNR_MAX_DB), ssim (skimage defaults), ab_l1, ab_l2, auc (mean form),
    cf / cf_real (Hasler-Suesstrunk colorfulness of prediction / truth) and
    cf_abs / cf_abs_real (DDColor's |rg|, |yb| variant).
  """
  return {
      'psnr': psnr(rgb_pred, rgb_true),
      'ssim': ssim(rgb_pred, rgb_true),
      'ab_l1': ab_l1(ab_pred, ab_true),
      'ab_l2': ab_l2(ab_pred, ab_true),
      'auc': ab_auc(ab_pred, ab_true),
      'cf': colorfulness(rgb_pred),
      'cf_real': colorfulness(rgb_true),
      'cf_abs': colorfulness(rgb_pred, absolute=True),
      'cf_abs_real': colorfulness(rgb_true, absolute=True),
  }


@flax.struct.dataclass
class ImageMetrics(clu_metrics.Collection):
  """Dataset means of the `image_metrics` values, streamed batch by batch.

  Padded examples are excluded with a boolean mask [N]:

    totals = ImageMetrics.empty()
    for batch in dataset:
      values = image_metrics(rgb_pred, rgb_true, ab_pred, ab_true)
      totals = totals.merge(
          ImageMetrics.single_from_model_output(**values, mask=batch['mask']))
    summary = totals.compute()   # {name: scalar}

  `compute()` adds delta_cf = |mean cf - mean cf_real| (and delta_cf_abs),
  the colorfulness gap on dataset means as DDColor reports it.
  """

  psnr: clu_metrics.Average.from_output('psnr')
  ssim: clu_metrics.Average.from_output('ssim')
  ab_l1: clu_metrics.Average.from_output('ab_l1')
  ab_l2: clu_metrics.Average.from_output('ab_l2')
  auc: clu_metrics.Average.from_output('auc')
  cf: clu_metrics.Average.from_output('cf')
  cf_real: clu_metrics.Average.from_output('cf_real')
  cf_abs: clu_metrics.Average.from_output('cf_abs')
  cf_abs_real: clu_metrics.Average.from_output('cf_abs_real')

  def compute(self) -> dict[str, Any]:
    """Returns {name: dataset mean} plus delta_cf and delta_cf_abs."""
    out = super().compute()
    out['delta_cf'] = jnp.abs(out['cf'] - out['cf_real'])
    out['delta_cf_abs'] = jnp.abs(out['cf_abs'] - out['cf_abs_real'])
    return out
