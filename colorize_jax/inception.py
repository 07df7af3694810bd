"""Inception Score and Frechet Inception Distance with Keras' InceptionV3.

The paper ranks checkpoints by Inception Score (sec. 4); DDColor and its peers
report FID. Both come from one forward pass of InceptionV3 per batch:
`InceptionScorer.features` returns the softmax over the 1000 ImageNet classes
(for IS) and the 2048-d average-pool features (for FID).

Caveat: `keras.applications.InceptionV3` is a different port of the Inception
weights than the TF-slim graph behind the original IS/FID code and
pytorch-fid's `pt_inception` (which also differs in resizing and
preprocessing), so the absolute IS and FID values here are NOT numerically
comparable with published figures; compare them only within this codebase
(same weights, same resolution, same number of images).

Weights: `weights='imagenet'` uses Keras' cached file
($KERAS_HOME or ~/.keras)/models/inception_v3_weights_tf_dim_ordering_tf_kernels.h5
and otherwise tries to download it with a short timeout; a path loads a local
.h5 / .weights.h5 file; None gives random weights (tests only). When weights
cannot be had, `InceptionScorer.create` raises `InceptionUnavailable`, so that
an evaluation can still report its other metrics and say why IS/FID are
missing.

The math (`inception_score`, `FeatureStats`, `frechet_distance`) is numpy /
scipy only; TensorFlow is imported when a scorer is created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from typing import Any, Iterator
import zipfile

import numpy as np
from scipy import linalg
from scipy import special

from colorize_jax import color

INPUT_SIZE = 299
NUM_CLASSES = 1000
FEATURE_DIM = 2048
IMAGENET_WEIGHTS_URL = (
    'https://storage.googleapis.com/tensorflow/keras-applications/'
    'inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5')
IMAGENET_WEIGHTS_FILE = 'inception_v3_weights_tf_dim_ordering_tf_kernels.h5'
IMAGENET_WEIGHTS_MD5 = '9a0d58056eeedaa3f26cb7ebd46da564'   # keras.applications'


class InceptionUnavailable(RuntimeError):
  """InceptionV3 weights could not be loaded; the message says why."""


def keras_cache_dir() -> str:
  """Keras' cache folder: $KERAS_HOME, else ~/.keras (as keras.utils.get_file)."""
  return os.environ.get('KERAS_HOME') or os.path.join(
      os.path.expanduser('~'), '.keras')


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
  # keras.utils.get_file (urlretrieve) has no timeout argument; without one an
  # offline machine behind a dropping firewall hangs for minutes.
  previous = socket.getdefaulttimeout()
  socket.setdefaulttimeout(seconds)
  try:
    yield
  finally:
    socket.setdefaulttimeout(previous)


def _imagenet_weights_path(cache_dir: str | None,
                           download_timeout_s: float | None) -> str:
  """Path of the cached ImageNet weights, downloading them if allowed."""
  import keras  # pylint: disable=g-import-not-at-top

  cache_dir = cache_dir or keras_cache_dir()
  path = os.path.join(cache_dir, 'models', IMAGENET_WEIGHTS_FILE)
  if os.path.isfile(path):
    return path
  hint = (f'Download {IMAGENET_WEIGHTS_URL} on a machine with internet access '
          f'and copy it to {path}, or pass its path (launch.py: --inception-weights '
          f'FILE; Python: weights=FILE).')
  if not download_timeout_s:
    raise InceptionUnavailable(
        f'ImageNet weights for InceptionV3 are not cached at {path} and '
        f'downloading is disabled. {hint}')
  try:
    with _socket_timeout(download_timeout_s):
      return keras.utils.get_file(
          IMAGENET_WEIGHTS_FILE, IMAGENET_WEIGHTS_URL, cache_dir=cache_dir,
          cache_subdir='models', file_hash=IMAGENET_WEIGHTS_MD5)
  except Exception as e:  # pylint: disable=broad-except
    # get_file wraps URL errors in a bare Exception; any failure means "no
    # weights", which the caller must be able to catch as one type.
    raise InceptionUnavailable(
        f'ImageNet weights for InceptionV3 are not cached at {path} and could '
        f'not be downloaded ({type(e).__name__}: {e}). {hint}') from e


def _check_weights_file(path: str) -> None:
  """Rejects a missing or malformed weights file before the model is built."""
  if not os.path.isfile(path):
    raise InceptionUnavailable(
        f'InceptionV3 weights file {path!r} does not exist.')
  if path.endswith(('.h5', '.hdf5')):
    import h5py  # pylint: disable=g-import-not-at-top
    ok = h5py.is_hdf5(path)
  elif path.endswith('.keras'):
    ok = zipfile.is_zipfile(path)
  else:
    raise InceptionUnavailable(
        f'InceptionV3 weights file {path!r}: expected a Keras .h5, '
        '.weights.h5 or .keras file.')
  if not ok:
    raise InceptionUnavailable(
        f'InceptionV3 weights file {path!r} is corrupt (not an HDF5 / zip '
        'archive as its extension says).')


@dataclasses.dataclass
class InceptionFeatures:
  """InceptionV3 outputs for a batch of N images.

  Attributes:
    probs: float32 [N, 1000], softmax class probabilities (rows sum to 1).
    pool: float32 [N, 2048], average-pool features (>= 0), the FID features.
  """
  probs: np.ndarray
  pool: np.ndarray


@dataclasses.dataclass
class InceptionScorer:
  """Keras InceptionV3 returning class probabilities and pool features.

  Build it with `InceptionScorer.create`. It runs on TensorFlow (the CPU
  build in this project), so it never competes with JAX for accelerator
  memory; batches of `batch_size` images bound its host memory.

  Keras' InceptionV3 weights are not the TF-slim / pytorch-fid reference
  Inception, so IS and FID from it are comparable only within this codebase,
  not with published numbers.
  """

  model: Any              # keras.Model: image -> (avg_pool [N, 2048], probs)
  weights: str            # where the weights came from, for reports
  batch_size: int = 50
  _forward: Any = dataclasses.field(default=None, repr=False)

  @classmethod
  def create(cls, weights: str | None = 'imagenet', *, batch_size: int = 50,
             cache_dir: str | None = None,
             download_timeout_s: float | None = 15.0) -> InceptionScorer:
    """Builds InceptionV3 with the given weights.

    Args:
      weights: 'imagenet' (Keras' cached file, downloaded if missing and
        allowed), a path to a local weights file (.h5, .weights.h5 or
        .keras, as Keras saves them, for the 1000-class InceptionV3 with its
        top), or None for random weights (tests, timing).
      batch_size: images per forward pass.
      cache_dir: Keras cache folder for 'imagenet' (default $KERAS_HOME or
        ~/.keras); the file is looked up in its models/ subfolder.
      download_timeout_s: socket timeout of the 'imagenet' download; None or
        0 disables downloading (only the cache is used).

    Returns:
      An `InceptionScorer`.

    Raises:
      InceptionUnavailable: the weights are missing, cannot be downloaded, or
        do not load (corrupt file, wrong architecture).
    """
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    if weights == 'imagenet':
      path = _imagenet_weights_path(cache_dir, download_timeout_s)
      source = f'imagenet ({path})'
    elif weights is None:
      path, source = None, 'random (weights=None)'
    else:
      path = os.fspath(weights)
      _check_weights_file(path)
      source = path

    import keras  # pylint: disable=g-import-not-at-top

    try:
      base = keras.applications.InceptionV3(
          include_top=True, weights=path, classes=NUM_CLASSES,
          classifier_activation='softmax')
    except Exception as e:  # pylint: disable=broad-except
      raise InceptionUnavailable(
          f'Could not load InceptionV3 weights from {source}: '
          f'{type(e).__name__}: {e}') from e
    model = keras.Model(base.inputs,
                        [base.get_layer('avg_pool').output, base.output])
    return cls(model=model, weights=source, batch_size=batch_size)

  def _compiled_forward(self):
    if self._forward is None:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from keras.applications import inception_v3  # pylint: disable=g-import-not-at-top

      @tf.function(input_signature=[
          tf.TensorSpec([None, None, None, 3], tf.float32)])
      def forward(rgb255):
        x = tf.image.resize(rgb255, (INPUT_SIZE, INPUT_SIZE),
                            method='bilinear', antialias=True)
        x = inception_v3.preprocess_input(x)   # [0, 255] -> [-1, 1]
        pool, probs = self.model(x, training=False)
        return probs, pool

      self._forward = forward
    return self._forward

  def features(self, rgb: np.ndarray) -> InceptionFeatures:
    """Class probabilities and pool features of a batch of images.

    Images are resized to 299x299 (bilinear, antialiased) and scaled to
    [-1, 1] as `keras.applications.inception_v3.preprocess_input` does; they
    are processed `batch_size` at a time.

    Args:
      rgb: RGB [N, H, W, 3]: uint8, uint16 (full scale) or float in [0, 1].

    Returns:
      `InceptionFeatures` with probs [N, 1000] and pool [N, 2048].
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
      raise ValueError(f'Expected RGB [N, H, W, 3], got shape {rgb.shape}.')
    scale = 255.0 / color.full_scale(rgb.dtype)   # Keras' preprocessing reads 0..255
    forward = self._compiled_forward()
    probs, pool = [], []
    for start in range(0, len(rgb), self.batch_size):
      chunk = rgb[start:start + self.batch_size].astype(np.float32) * scale
      p, f = forward(chunk)
      probs.append(p.numpy())
      pool.append(f.numpy())
    if not probs:
      return InceptionFeatures(np.zeros((0, NUM_CLASSES), np.float32),
                               np.zeros((0, FEATURE_DIM), np.float32))
    return InceptionFeatures(np.concatenate(probs), np.concatenate(pool))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """Inception Score exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

  The standard definition (Salimans et al. 2016, openai/improved-gan): the
  N predictions are cut into `splits` consecutive parts, p(y) is the mean
  prediction within a part, and the score of each part is
  exp(mean_x KL(p(y|x) || p(y))); computed in float64. With probabilities
  from `InceptionScorer` (Keras weights) the values are not comparable with
  IS figures from the original TF Inception graph.

  Args:
    probs: [N, K] class probabilities, rows summing to 1, N >= splits.
    splits: number of parts (10 in the literature).

  Returns:
    (mean, std) of the per-part scores; each score lies in [1, K].
  """
  p = np.asarray(probs, dtype=np.float64)
  if p.ndim != 2:
    raise ValueError(f'probs must be [N, K], got shape {p.shape}.')
  n = p.shape[0]
  if not 1 <= splits <= n:
    raise ValueError(f'need 1 <= splits <= N, got splits={splits}, N={n}.')
  scores = []
  for k in range(splits):
    part = p[k * n // splits:(k + 1) * n // splits]
    py = part.mean(axis=0, keepdims=True)
    # rel_entr(p, q) = p log(p / q), defined as 0 where p = 0.
    kl = special.rel_entr(part, py).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


@dataclasses.dataclass
class FeatureStats:
  """Streaming mean and covariance of feature vectors, in float64.

  Keeps the count, the sum and the sum of outer products, so batches can be
  added in any order (and stats of several shards merged) with the same
  result up to rounding.

  Attributes:
    n: number of vectors seen.
    total: float64 [D], their sum.
    outer: float64 [D, D], the sum of their outer products.
  """
  n: int
  total: np.ndarray
  outer: np.ndarray

  @classmethod
  def empty(cls, dim: int = FEATURE_DIM) -> FeatureStats:
    """Stats of no vectors of dimension `dim`."""
    return cls(0, np.zeros(dim, np.float64), np.zeros((dim, dim), np.float64))

  def update(self, features: np.ndarray,
             mask: np.ndarray | None = None) -> FeatureStats:
    """Adds a batch in place and returns self.

    Args:
      features: [N, D] feature vectors.
      mask: optional bool [N]; False rows (padding) are skipped.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != self.total.shape[0]:
      raise ValueError(
          f'features must be [N, {self.total.shape[0]}], got {f.shape}.')
    if mask is not None:
      f = f[np.asarray(mask, dtype=bool)]
    self.n += f.shape[0]
    self.total += f.sum(axis=0)
    self.outer += f.T @ f
    return self

  def merge(self, other: FeatureStats) -> FeatureStats:
    """Stats of the union of both sets (a new object)."""
    return FeatureStats(self.n + other.n, self.total + other.total,
                        self.outer + other.outer)

  def mean(self) -> np.ndarray:
    """float64 [D], the sample mean."""
    if self.n < 1:
      raise ValueError('FeatureStats: no features were added.')
    return self.total / self.n

  def cov(self) -> np.ndarray:
    """float64 [D, D], the unbiased sample covariance (as np.cov)."""
    if self.n < 2:
      raise ValueError(f'FeatureStats: a covariance needs >= 2 vectors, '
                       f'got {self.n}.')
    mu = self.mean()
    return (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)

  def fid(self, other: FeatureStats, method: str = 'sqrtm') -> float:
    """Frechet distance between the Gaussians fitted to both sets.

    Args:
      other: stats of the other set, same dimension.
      method: 'sqrtm' or 'eigh', see `frechet_distance`.
    """
    return frechet_distance(self.mean(), self.cov(), other.mean(), other.cov(),
                            method=method)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6,
                     method: str = 'sqrtm') -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

  d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

  method='sqrtm' (default) is the reference computation of pytorch-fid / TTUR:
  `scipy.linalg.sqrtm` of the product; if the root is not finite (singular
  product, e.g. fewer samples than dimensions), eps is added to both
  diagonals; a small imaginary part from rounding is dropped, a large one is
  an error. method='eigh' computes the same trace from symmetric
  eigendecompositions, tr (sigma1 sigma2)^(1/2) = sum sqrt(eig(s1^(1/2)
  sigma2 s1^(1/2))), with s1^(1/2) the PSD root of sigma1; it agrees to
  rounding (about 1e-10 relative) and is several times faster at D = 2048,
  where sqrtm takes minutes on a small CPU.

  Args:
    mu1, mu2: [D] means.
    sigma1, sigma2: [D, D] covariances (symmetric positive semi-definite).
    eps: diagonal offset used by 'sqrtm' when the product is singular.
    method: 'sqrtm' or 'eigh'.

  Returns:
    The squared Frechet distance (FID when the inputs are Inception pool
    statistics), >= 0 up to rounding.

  Raises:
    ValueError: mismatched shapes, an unknown method, or a large imaginary
      part in the 'sqrtm' root.
  """
  mu1 = np.atleast_1d(mu1).astype(np.float64)
  mu2 = np.atleast_1d(mu2).astype(np.float64)
  sigma1 = np.atleast_2d(sigma1).astype(np.float64)
  sigma2 = np.atleast_2d(sigma2).astype(np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f'Shapes differ: mu {mu1.shape} vs {mu2.shape}, '
                     f'sigma {sigma1.shape} vs {sigma2.shape}.')
  diff = mu1 - mu2
  if method == 'sqrtm':
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
      offset = np.eye(sigma1.shape[0]) * eps
      covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
      if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
        raise ValueError(
            'frechet_distance: the matrix square root has an imaginary part '
            f'of {np.max(np.abs(covmean.imag)):.3g}.')
      covmean = covmean.real
    tr_covmean = np.trace(covmean)
  elif method == 'eigh':
    w, v = linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    ev = linalg.eigvalsh((m + m.T) / 2)   # symmetrise away rounding
    tr_covmean = np.sqrt(np.clip(ev, 0.0, None)).sum()
  else:
    raise ValueError(
        f"frechet_distance: method must be 'sqrtm' or 'eigh', got {method!r}.")
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * tr_covmean)
