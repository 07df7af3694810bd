"""Evaluating checkpoints, and the paper's selection among them (sec. 4).

`evaluate(workdir, step)` colorizes an evaluation set with one checkpoint and
measures, for the model, the gray baseline (ab = 0) and the real photos:

  * PSNR (RGB) and SSIM, mean ab L1 / L2, AuC of the cumulative ab-error curve
    (0..150), colourfulness CF (Hasler-Suesstrunk; also DDColor's |rg|, |yb|
    variant) and the gap to the real photos' CF (`metrics.ImageMetrics`);
  * Inception Score (the paper's selection metric) and FID to the real photos
    (`inception.InceptionScorer`; both missing, with the reason in the report,
    when no InceptionV3 weights can be had);
  * the discriminator's realism score (paper sec. 5): the mean sigmoid of its
    patch logits, on the colorizations, the gray baseline and the real photos.

The evaluation set is the run's validation split (as `train.validation_step`
sees it: short side resized to the training size, centre-cropped, so the
model's PSNR, AuC, CF and realism here equal the checkpoint's logged val/psnr,
val/auc, val/cf and val/d_fake_prob) or any folder of colour photos.

  workdir/eval/<data>/step_<N>[-<inception weights, if not the default>]/
    metrics.json   the numbers, and the cache key they were computed for
    report.html    metric table (model, gray baseline, real photos) + examples
    examples.png   gray input | colorized | real photo, first images
    thumbs.png     the first colorizations in a strip (for leaderboards)

<data> is 'val' for the run's validation split or '<folder name>-<hash>' for
`--data DIR` (with '-first<N>' when limited to N images).

Cache: metrics.json holds its key: metric-set version, step, evaluation data
(its definition and a signature of its files), image size and Inception
weights. A later evaluation with the same key reads the file instead of
computing; any difference recomputes and overwrites it.

`select(workdirs, metric)` evaluates every saved checkpoint of every run
(through the cache), ranks them by any metric of `METRICS` (each knows whether
higher or lower is better), writes a leaderboard (Markdown, CSV and HTML with
thumbnails of the top k) and records, in *each* run's workdir/best.json, that
run's best checkpoint under this selection together with its overall rank, so
that `colorize --best` on any of the runs uses the checkpoint this selection
chose for it (rank 1 marks the overall winner). Runs left out of a selection
keep the best.json they had.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime
import functools
import hashlib
import html
import io
import json
import os
import time
import uuid
from typing import Any, Sequence

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import tqdm

from colorize_jax import checkpoints
from colorize_jax import files
from colorize_jax import images as images_lib
from colorize_jax import inception
from colorize_jax import inference
from colorize_jax import input_pipeline
from colorize_jax import metrics as metrics_lib
from colorize_jax import parallel
from colorize_jax import steps
from colorize_jax import visualize

# Bump when what a metric means or how it is computed changes: cached results
# with another version are recomputed.
METRICS_VERSION = 2   # 2: IS splits hold >= IS_MIN_PER_SPLIT images
EVAL_DIR = 'eval'
METRICS_FILE = 'metrics.json'
REPORT_FILE = 'report.html'
EXAMPLES_FILE = 'examples.png'
THUMBS_FILE = 'thumbs.png'
NUM_EXAMPLES = 8
NUM_THUMBS = 4
LEADERBOARD_THUMB_SIZE = 96
IS_SPLITS = 10   # Salimans et al.; fewer when there are fewer images:
# a part's p(y) from a handful of images is no marginal at all (a one-image part scores
# exactly 1, and 12 images in 10 parts pinned IS near 1 whatever the model).
IS_MIN_PER_SPLIT = 50


def inception_splits(num_images: int) -> int:
  """How many parts the Inception Score of `num_images` images is averaged over."""
  return max(1, min(IS_SPLITS, num_images // IS_MIN_PER_SPLIT))


@dataclasses.dataclass(frozen=True)
class Metric:
  """How to read and rank one metric.

  Attributes:
    label: column title.
    higher_is_better: the ranking direction.
    fmt: format spec of its values.
    rows: the systems it is meaningful for ('model', 'gray', 'real').
    doc: one line for the report.
  """
  label: str
  higher_is_better: bool
  fmt: str
  rows: tuple[str, ...]
  doc: str


_ALL = ('model', 'gray', 'real')
_VS_REAL = ('model', 'gray')
METRICS: dict[str, Metric] = {
    'psnr': Metric('PSNR dB', True, '.2f', _VS_REAL, 'RGB PSNR against the real photo'),
    'ssim': Metric('SSIM', True, '.4f', _VS_REAL, 'mean SSIM (7x7, skimage defaults)'),
    'ab_l1': Metric('ab L1', False, '.2f', _VS_REAL, 'mean |ab error| over pixels and a, b'),
    'ab_l2': Metric('ab L2', False, '.2f', _VS_REAL, 'mean Euclidean ab distance'),
    'auc': Metric('AuC', True, '.4f', _VS_REAL,
                  'area under the cumulative ab-error curve, thresholds 0..150'),
    'cf': Metric('CF', True, '.2f', _ALL, 'Hasler-Suesstrunk colourfulness'),
    'delta_cf': Metric('ΔCF', False, '.2f', _VS_REAL, '|mean CF - mean CF of real photos|'),
    'cf_abs': Metric('CF (DDColor)', True, '.2f', _ALL,
                     "colourfulness as DDColor computes it (|rg|, |yb|)"),
    'delta_cf_abs': Metric('ΔCF (DDColor)', False, '.2f', _VS_REAL,
                           'the DDColor-variant CF gap to the real photos'),
    'inception_score': Metric('IS', True, '.3f', _ALL,
                              'Inception Score (Keras InceptionV3; comparable within this '
                              'codebase only)'),
    'fid': Metric('FID', False, '.2f', _VS_REAL, 'Frechet Inception Distance to the real photos'),
    'realism': Metric('D realism', True, '.4f', _ALL,
                      "mean sigmoid of the checkpoint's own discriminator's patch logits"),
}
ROW_LABELS = {'model': 'model', 'gray': 'gray baseline (ab = 0)', 'real': 'real photos'}
_INCEPTION_METRICS = ('inception_score', 'fid')


class MetricUnavailable(RuntimeError):
  """The metric a selection ranks by cannot be computed; the message says why and what to do."""


def _jsonable(tree: Any) -> Any:
  """The value as it comes back from JSON (tuples become lists), for key comparisons."""
  return json.loads(json.dumps(tree, sort_keys=True))


def _sha(text: str, n: int = 16) -> str:
  # surrogateescape: file names that are not UTF-8 arrive as lone surrogates.
  return hashlib.sha256(text.encode('utf-8', 'surrogateescape')).hexdigest()[:n]


# ----------------------------------------------------------------------------
# Evaluation data.


@dataclasses.dataclass
class EvalData:
  """A set of evaluation images and its identity.

  Attributes:
    key: what defines the set (for the cache), JSON-able.
    tag: its folder name under workdir/eval/.
    description: one line for reports.
    build: returns (images, skipped): the `input_pipeline.ImageSet` and
      {reason: [names]} of files left out; called at most once.
  """
  key: dict[str, Any]
  tag: str
  description: str
  build: Any
  _built: Any = None

  def images(self) -> tuple[input_pipeline.ImageSet, dict[str, list[str]]]:
    if self._built is None:
      self._built = self.build()
    return self._built


def _first(images: input_pipeline.ImageSet, n: int | None) -> input_pipeline.ImageSet:
  return images if n is None or n >= len(images) else images.subset(range(n))


_RANDOM_WEIGHTS_DRAW = uuid.uuid4().hex[:12]   # names this process's random InceptionV3


def _folder_signature(root: str) -> str:
  """A hash of the image files under root: relative paths, sizes, modification times."""
  entries = []
  for path in images_lib.list_images(root):
    try:
      st = os.stat(path)
    except OSError:   # a dangling link: unreadable, left out when the photos are read
      entries.append(f'{os.path.relpath(path, root)}\tmissing')
      continue
    entries.append(f'{os.path.relpath(path, root)}\t{st.st_size}\t{st.st_mtime_ns}')
  return _sha('\n'.join(entries), 32)


def validation_data(config: ml_collections.ConfigDict, max_images: int | None = None) -> EvalData:
  """The run's validation split (`input_pipeline.build_splits(config.data).val`).

  Only the validation split is built: the training images are not scanned.

  Args:
    config: the run's config.
    max_images: keep only the first N images (None: all).
  """
  data = config.data
  key = {'split': 'val', 'source': data.source, 'num_val': data.get('num_val'),
         'val_fraction': data.get('val_fraction'), 'max_images': max_images,
         'places_classes': data.get('places_classes')}
  if data.source == 'folder' and data.get('folder'):
    folder = os.path.abspath(os.path.expanduser(str(data.folder)))
    key['folder'] = folder
    # With train/ and val/, the validation photos are val/'s alone: a touched training
    # photo made every cached result stale (select evaluated every checkpoint again).
    val_dir = os.path.join(folder, 'val')
    split = os.path.isdir(os.path.join(folder, 'train')) and os.path.isdir(val_dir)
    key['files'] = (_folder_signature(val_dir) if split else
                    _folder_signature(folder) if os.path.isdir(folder) else None)

  def build():
    splits = input_pipeline.build_splits(data, splits=('val',))
    return _first(splits.val, max_images), {}

  limit = f', first {max_images}' if max_images else ''
  return EvalData(key=_jsonable(key), tag='val' + (f'-first{max_images}' if max_images else ''),
                  description=f'validation split of the run ({data.source}{limit})', build=build)


def folder_data(folder: str, max_images: int | None = None) -> EvalData:
  """Every colour photo under `folder` (recursively), in sorted order.

  Unreadable and grayscale files (no colours to compare with) are left out and
  counted; each image is resized and centre-cropped as validation images are.

  Raises:
    FileNotFoundError: the folder does not exist; ValueError: it is a file (when
      built: if it holds no usable photo).
  """
  root = os.path.abspath(os.path.expanduser(folder))
  files.check_folder(root, 'The --data folder of colour photos')
  key = {'folder': root, 'files': _folder_signature(root), 'max_images': max_images}

  def build():
    paths = images_lib.list_images(root)
    skipped: dict[str, list[str]] = {}
    kept = []
    for path, (status, _) in zip(paths, images_lib.check_all(paths)):   # as training data
      if status == 'ok':
        kept.append(path)
      else:
        reason = 'unreadable' if status == 'corrupt' else status
        skipped.setdefault(reason, []).append(os.path.relpath(path, root))
    if skipped:
      logging.warning('--data %s: left out %s.', root,
                      ', '.join(f'{len(v)} {k} (e.g. {v[0]})' for k, v in skipped.items()))
    if not kept:
      raise ValueError(f'No readable colour photos under {root}.')
    kept = kept[:max_images] if max_images else kept
    images = input_pipeline.ImageSet(
        names=tuple(os.path.relpath(p, root) for p in kept), paths=tuple(kept),
        # Pillow for all: any format, EXIF orientation, alpha, 16 bit.
        needs_pil=np.ones(len(kept), bool))
    return images, skipped

  tag = f'{os.path.basename(root) or "data"}-{_sha(root, 8)}'
  if max_images:
    tag += f'-first{max_images}'
  limit = f', first {max_images}' if max_images else ''
  return EvalData(key=_jsonable(key), tag=tag, description=f'folder {root}{limit}', build=build)


# ----------------------------------------------------------------------------
# Inception weights.


def _file_digest(path: str, algorithm: str) -> str:
  digest = hashlib.new(algorithm)
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


class InceptionSource:
  """Which InceptionV3 weights IS and FID use, built on first need.

  Args:
    weights: 'imagenet' (Keras' cached file, downloaded if possible), a path
      to a weights file, 'random' (random weights: for tests only), or None
      (IS and FID off).
  """

  def __init__(self, weights: str | None = 'imagenet'):
    self.weights = weights
    self._scorer = None
    self._probed = True   # whether `id` is known to be right (see `id`)
    self.reason: str | None = None   # why IS / FID are missing
    # Results of other weights go to other folders (`tag`): an evaluation without IS must
    # not overwrite one with it that a leaderboard links to.
    self.tag = ''
    if weights is None:
      self._id, self.reason = None, 'Inception metrics were turned off (--inception-weights none).'
      self.tag = 'no-inception'
    elif weights == 'random':
      # Drawn anew in every process: results are this process's alone (a cached IS of
      # other random weights was ranked beside fresh ones).
      self._id = f'random-weights (tests only) {_RANDOM_WEIGHTS_DRAW}'
      self.tag = 'random-inception'
    elif weights == 'imagenet':
      cached = os.path.join(inception.keras_cache_dir(), 'models', inception.IMAGENET_WEIGHTS_FILE)
      self._id = f'imagenet:{inception.IMAGENET_WEIGHTS_MD5}'
      self._probed = os.path.isfile(cached)
      if self._probed and _file_digest(cached, 'md5') != inception.IMAGENET_WEIGHTS_MD5:
        # Keras checks the hash when it downloads, not when it loads: a damaged file would
        # fail at every run, and results cached under the right id would never be found.
        self._id, self.reason = None, (
            f'The cached InceptionV3 weights {cached} are damaged (their MD5 is not '
            f'{inception.IMAGENET_WEIGHTS_MD5}); delete the file to download it again.')
    else:
      path = os.path.abspath(os.fspath(weights))
      if not os.path.isfile(path):
        # Asked for by name: a typo must not quietly drop IS and FID.
        raise FileNotFoundError(f'InceptionV3 weights file {path} does not exist.')
      else:
        digest = _file_digest(path, 'sha256')[:16]
        self._id, self.tag = f'file:{path}:sha256:{digest}', f'inception-{digest[:8]}'
        # Loaded before its id is used: a file that cannot be loaded gives results keyed
        # without IS, found again by the next run (and not recomputed every time).
        self._probed = False

  @property
  def id(self) -> str | None:
    """What identifies the weights in cache keys; None when IS / FID cannot be had.

    ImageNet weights that are not cached are looked for (downloaded if possible) on
    first use, not on construction: a wrong run or step fails before that.
    """
    if not self._probed:
      self._probed = True
      self.scorer()
    return self._id

  @property
  def available(self) -> bool:
    return self.id is not None

  def scorer(self) -> inception.InceptionScorer | None:
    """The scorer, or None (with `reason` set) when the weights cannot be loaded."""
    if self._scorer is None and self._id is not None:
      weights = None if self.weights == 'random' else self.weights
      try:
        self._scorer = inception.InceptionScorer.create(weights)
      except inception.InceptionUnavailable as e:
        self._id, self.reason = None, str(e)
    return self._scorer


# ----------------------------------------------------------------------------
# The per-batch computation.


def eval_batch(state: steps.GANState, images: jnp.ndarray, gan: steps.GAN) -> dict[str, Any]:
  """`steps.quality_step` with its colorizations as uint8 [N, S, S, 3] (for Inception
  and the leaderboard's examples).

  Args:
    state: the checkpoint's `GANState` (its generator may be prepared:
      `steps.prepare_generator`).
    images: real photos, rgb uint8 [N, S, S, 3].
    gan: the static model.

  Returns:
    {'model': , 'gray': per-image `metrics.image_metrics` dicts (float32 [N]),
     'realism': {'model', 'gray', 'real': mean patch probability [N] in (0, 1)},
     'model_rgb', 'gray_rgb': uint8 [N, S, S, 3]}.
  """
  out = steps.quality_step(state, images, gan)
  for name in ('model_rgb', 'gray_rgb'):
    out[name] = jnp.clip(jnp.round(out[name] * 255.0), 0, 255).astype(jnp.uint8)
  return out


def frechet_distance_low_rank(f1: np.ndarray, f2: np.ndarray) -> float:
  """FID of two feature sets given as matrices, exact, for fewer vectors than dimensions.

  With centred features A1 [n1, D], A2 [n2, D] and covariances Ai^T Ai / (ni - 1),
  the non-zero eigenvalues of sigma1 sigma2 are the squared singular values of
  A1 A2^T / sqrt((n1 - 1)(n2 - 1)), so tr (sigma1 sigma2)^(1/2) is their sum:
  an [n1, n2] SVD instead of [D, D] eigendecompositions (at D = 2048 and a few
  hundred images, milliseconds instead of tens of seconds on a small CPU). It
  equals `inception.frechet_distance(..., method='eigh')` up to rounding.

  Args:
    f1: [n1, D] feature vectors, n1 >= 2.
    f2: [n2, D] feature vectors, n2 >= 2.

  Returns:
    The squared Frechet distance, >= 0 up to rounding.
  """
  f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
    raise ValueError(f'Need two [n >= 2, D] feature matrices, got {f1.shape} and {f2.shape}.')
  mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
  a1, a2 = f1 - mu1, f2 - mu2
  c1, c2 = len(f1) - 1.0, len(f2) - 1.0
  cross = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt(c1 * c2)
  diff = mu1 - mu2
  return float(diff @ diff + np.sum(a1 * a1) / c1 + np.sum(a2 * a2) / c2 - 2.0 * cross)


class _FeatureSet:
  """InceptionV3 outputs of one stream of images: class probabilities and pool features.

  Pool features are kept as rows while there are fewer than their dimension
  (then FID takes `frechet_distance_low_rank`), else only as `FeatureStats`.
  """

  def __init__(self):
    self.probs: list[np.ndarray] = []
    self.stats = inception.FeatureStats.empty()
    self.rows: list[np.ndarray] | None = []

  def add(self, features: inception.InceptionFeatures) -> None:
    self.probs.append(features.probs)
    self.stats.update(features.pool)
    if self.rows is not None:
      self.rows.append(np.asarray(features.pool, np.float64))
      if self.stats.n >= inception.FEATURE_DIM:
        self.rows = None

  def inception_score(self) -> dict[str, float]:
    p = np.concatenate(self.probs) if self.probs else np.zeros((0, inception.NUM_CLASSES))
    if not len(p):
      return {}
    mean, std = inception.inception_score(p, splits=inception_splits(len(p)))
    return {'inception_score': mean, 'inception_score_std': std}

  def fid(self, other: '_FeatureSet') -> float | None:
    """FID to `other`, or None if either has fewer than 2 images."""
    if self.stats.n < 2 or other.stats.n < 2:
      return None
    if self.rows is not None and other.rows is not None:
      return frechet_distance_low_rank(np.concatenate(self.rows), np.concatenate(other.rows))
    return self.stats.fid(other.stats, method='eigh')


class _InceptionStreams:
  """Feeds named image streams through InceptionV3 in the scorer's batch size."""

  def __init__(self, scorer: inception.InceptionScorer, names: Sequence[str]):
    self.scorer = scorer
    self.sets = {n: _FeatureSet() for n in names}
    self._buffer: dict[str, list[np.ndarray]] = {n: [] for n in names}

  def add(self, name: str, rgb: np.ndarray) -> None:
    """Queues rgb uint8 [n, H, W, 3]; runs the network once a batch is full."""
    if len(rgb):
      self._buffer[name].append(rgb)
    if sum(len(x) for x in self._buffer[name]) >= self.scorer.batch_size:
      self._run(name)

  def finish(self) -> dict[str, _FeatureSet]:
    for name in self.sets:
      self._run(name)
    return self.sets

  def _run(self, name: str) -> None:
    if self._buffer[name]:
      self.sets[name].add(self.scorer.features(np.concatenate(self._buffer[name])))
      self._buffer[name] = []


@dataclasses.dataclass
class _Reference:
  """Inception results that do not depend on the checkpoint: real photos and gray baseline.

  Attributes:
    real: the real photos' features (FID's reference).
    rows: {'gray': {...}, 'real': {...}}: IS, and the gray baseline's FID.
  """
  real: _FeatureSet
  rows: dict[str, dict[str, float]]


# ----------------------------------------------------------------------------
# Evaluating one checkpoint.

# Compiled `eval_batch`es, shared by every Evaluator: one per architecture and mesh.
_EVAL_FNS: dict[Any, Any] = {}


class Evaluator:
  """Evaluates checkpoints with shared compiled functions, data and Inception statistics.

  One `Evaluator` serves a whole selection: each model architecture is
  compiled once, each evaluation set built once, and the Inception features of
  the real photos and of the gray baseline (which do not depend on the
  checkpoint) computed once per set.

  Args:
    inception_weights: see `InceptionSource` ('imagenet', a path, 'random' for
      tests, None to skip IS and FID).
    data_dir: evaluate on every colour photo of this folder instead of each
      run's validation split.
    max_images: only the first N evaluation images.
    mesh: devices (default: all local devices).
    progress: tqdm bars.
  """

  def __init__(self, inception_weights: str | None = 'imagenet', *, data_dir: str | None = None,
               max_images: int | None = None, mesh: jax.sharding.Mesh | None = None,
               progress: bool = True):
    if max_images is not None and max_images < 1:
      raise ValueError(f'max_images must be >= 1, got {max_images}')
    self.inception = InceptionSource(inception_weights)
    self.data_dir, self.max_images = data_dir, max_images
    self.mesh = mesh if mesh is not None else parallel.make_mesh()
    self.progress = progress
    self.evaluated: list[tuple[str, int]] = []   # computed (workdir, step)
    self.cached: list[tuple[str, int]] = []      # read from metrics.json
    self._folder = folder_data(data_dir, max_images) if data_dir else None
    self._data: dict[str, EvalData] = {}
    self._references: dict[str, _Reference] = {}

  # -- what a checkpoint is evaluated on, and where its results go.

  def data_for(self, config: ml_collections.ConfigDict) -> EvalData:
    """The evaluation set for a run with this config."""
    if self._folder is not None:
      return self._folder
    name = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
    if name not in self._data:
      self._data[name] = validation_data(config, self.max_images)
    return self._data[name]

  def key(self, workdir: epath.PathLike, config: ml_collections.ConfigDict,
          step: int) -> dict[str, Any]:
    """The cache key of evaluating `step` of the run in `workdir` (whose config this is).

    It names the save of the checkpoint (`checkpoints.commit_id`), so that results of
    weights since replaced (a run retrained from an earlier step) are not reused.
    """
    return _jsonable({'version': METRICS_VERSION, 'step': int(step),
                      'checkpoint': checkpoints.commit_id(workdir, step),
                      'image_size': int(config.image_size), 'data': self.data_for(config).key,
                      'inception': self.inception.id})

  def result_dir(self, workdir: epath.PathLike, config: ml_collections.ConfigDict,
                 step: int) -> epath.Path:
    """workdir/eval/<data>/step_<N>[-<weights>]: one folder per data, step and Inception
    weights asked for (ImageNet's, the default, without a suffix)."""
    name = f'step_{int(step)}' + (f'-{self.inception.tag}' if self.inception.tag else '')
    return epath.Path(workdir) / EVAL_DIR / self.data_for(config).tag / name

  def cached_result(self, workdir: epath.PathLike, config: ml_collections.ConfigDict,
                    step: int, key: dict[str, Any]) -> dict[str, Any] | None:
    """The stored metrics of `step` of the run in `workdir` (whose config this is) if they
    were computed for `key` (`self.key` of that step, now), else None."""
    path = self.result_dir(workdir, config, step) / METRICS_FILE
    if not path.exists():
      return None
    try:
      stored = json.loads(path.read_text())
    except ValueError:
      return None
    if stored.get('key') != key:
      return None
    # The run may have been moved or copied since: this is where it is now.
    stored['dir'], stored['workdir'] = os.fspath(path.parent), os.fspath(workdir)
    return stored

  # -- evaluation.

  def evaluate(self, workdir: epath.PathLike, step: int | str | None = None, *,
               use_cache: bool = True, image_progress: bool = True) -> dict[str, Any]:
    """Evaluates one checkpoint (or reads its cached results) and writes its report.

    Args:
      workdir: the run.
      step: None (the latest epoch's, see `inference.resolve_step`), 'best' or a step.
      use_cache: reuse the metrics.json of `result_dir` if its key matches.
      image_progress: a progress bar over the images (if `progress`).

    Returns:
      The results (as in metrics.json): 'rows' {'model', 'gray', 'real':
      {metric: value}}, 'unavailable' {metric: reason}, 'key', 'step',
      'epoch', 'num_images', 'data', 'inception_weights', 'seconds', 'dir'.
    """
    workdir = epath.Path(os.path.abspath(os.fspath(workdir)))
    chosen = inference.resolve_step(workdir, step)
    # Before the weights are read: a checkpoint saved again (or deleted by a training's
    # retention) while it is evaluated must not lend its key to the old weights' scores.
    config = checkpoints.load_config(workdir)
    key = self.key(workdir, config, chosen)
    if use_cache:
      stored = self.cached_result(workdir, config, chosen, key)
      if stored is not None:
        self.cached.append((os.fspath(workdir), chosen))
        return stored
    files.check_writable(workdir / EVAL_DIR, 'the evaluation results')
    start = time.perf_counter()
    restored = inference.restore(workdir, chosen, mesh=self.mesh)
    seconds = {'restore': time.perf_counter() - start}
    result = {'key': key, **self._compute(restored, seconds, image_progress and self.progress)}
    seconds['total'] = time.perf_counter() - start
    out_dir = self.result_dir(workdir, restored.config, chosen)
    result['dir'] = os.fspath(out_dir)
    write_report(result, out_dir)
    self.evaluated.append((os.fspath(workdir), chosen))
    return result

  def _batch_fn(self, restored: inference.Restored):
    key = (restored.gan.generator, restored.gan.discriminator, self.mesh)
    if key not in _EVAL_FNS:
      replicated = parallel.replicated(self.mesh)
      _EVAL_FNS[key] = steps.jit(functools.partial(eval_batch, gan=restored.gan),
                                 in_shardings=(replicated, parallel.batch_sharded(self.mesh)),
                                 out_shardings=replicated)
    return _EVAL_FNS[key]

  def _compute(self, restored: inference.Restored, seconds: dict[str, float],
               progress: bool) -> dict[str, Any]:
    """Runs the evaluation set through one checkpoint; the results dict of `evaluate`
    but its 'key'."""
    config = restored.config
    data = self.data_for(config)
    images, skipped = data.images()
    if not len(images):
      raise ValueError(f'The evaluation set ({data.description}) is empty.')
    scorer = self.inception.scorer()
    ref_name = json.dumps([data.key, config.image_size], sort_keys=True)
    reference = self._references.get(ref_name) if scorer is not None else None
    streams = None
    if scorer is not None:   # real photos and gray baseline only once per evaluation set
      streams = _InceptionStreams(scorer, ('model',) if reference else ('model', 'gray', 'real'))

    sums = self._measure(restored, images, streams, progress)
    rows = sums.rows()
    unavailable: dict[str, str] = {}
    start = time.perf_counter()
    if streams is not None:
      sets = streams.finish()
      if reference is None:
        reference = _Reference(real=sets['real'], rows={
            'gray': sets['gray'].inception_score(), 'real': sets['real'].inception_score()})
        gray_fid = sets['gray'].fid(sets['real'])
        if gray_fid is not None:
          reference.rows['gray']['fid'] = gray_fid
        self._references[ref_name] = reference
      rows['model'].update(sets['model'].inception_score())
      model_fid = sets['model'].fid(reference.real)
      if model_fid is None:
        unavailable['fid'] = f'FID needs at least 2 images, the evaluation set has {sums.count}.'
      else:
        rows['model']['fid'] = model_fid
      for row in ('gray', 'real'):
        rows[row].update(reference.rows[row])
    else:
      for name in _INCEPTION_METRICS:
        unavailable[name] = self.inception.reason or 'InceptionV3 unavailable.'
    seconds.update(model_and_metrics=sums.seconds_model,
                   inception=sums.seconds_inception + time.perf_counter() - start)
    return {
        'workdir': os.fspath(restored.workdir),
        'step': restored.step,
        'epoch': restored.epoch,
        'data': data.description,
        'skipped': {k: len(v) for k, v in skipped.items()},
        'num_images': sums.count,
        'image_size': int(config.image_size),
        'inception_weights': scorer.weights if scorer is not None else None,
        'inception_splits': inception_splits(sums.count) if scorer is not None else None,
        'rows': rows,
        'unavailable': unavailable,
        'seconds': seconds,
        'created': datetime.datetime.now().isoformat(timespec='seconds'),
        '_examples': {k: np.concatenate(v) for k, v in sums.examples.items() if v},
    }

  def _measure(self, restored: inference.Restored, images: input_pipeline.ImageSet,
               streams: '_InceptionStreams | None', progress: bool) -> '_Sums':
    """Streams the evaluation images through `eval_batch` (and Inception); the sums."""
    config = restored.config
    devices = self.mesh.devices.size
    batch_size = -(-max(int(config.batch_size), 1) // devices) * devices
    splits = input_pipeline.Splits(train=_first(images, 0), val=images, train_epoch_size=0,
                                   stats={})
    step_fn = self._batch_fn(restored)
    state = restored.state.replace(generator=steps.prepare_generator(
        restored.gan, restored.state.generator, config.image_size))
    sums = _Sums()
    bar = tqdm.tqdm(total=len(images), unit='img', disable=not progress, leave=False,
                    desc=f'step {restored.step}', dynamic_ncols=True)
    for batch in input_pipeline.val_batches(splits, image_size=config.image_size,
                                            global_batch_size=batch_size):
      start = time.perf_counter()
      images_on_devices = parallel.shard_batch({'image': batch['image']}, self.mesh)['image']
      out = parallel.fetch(step_fn(state, images_on_devices))
      mask = batch['mask']
      real = batch['image'][mask]
      sums.add(out, mask, real)
      middle = time.perf_counter()
      if streams is not None:
        streams.add('model', out['model_rgb'][mask])
        if 'real' in streams.sets:
          streams.add('gray', out['gray_rgb'][mask])
          streams.add('real', real)
      sums.seconds_model += middle - start
      sums.seconds_inception += time.perf_counter() - middle
      bar.update(len(real))
    bar.close()
    return sums


class _Sums:
  """Masked dataset sums of `eval_batch` outputs, and the first images for the example grid."""

  def __init__(self):
    self.totals = {'model': metrics_lib.ImageMetrics.empty(),
                   'gray': metrics_lib.ImageMetrics.empty()}
    self.realism = {'model': 0.0, 'gray': 0.0, 'real': 0.0}
    self.count = 0
    self.examples: dict[str, list[np.ndarray]] = {'gray': [], 'model': [], 'real': []}
    self.seconds_model = self.seconds_inception = 0.0

  def add(self, out: dict[str, Any], mask: np.ndarray, real: np.ndarray) -> None:
    for row in ('model', 'gray'):
      self.totals[row] = self.totals[row].merge(
          metrics_lib.ImageMetrics.single_from_model_output(**out[row], mask=mask))
    for row in self.realism:
      self.realism[row] += float(np.sum(np.asarray(out['realism'][row], np.float64)[mask]))
    take = max(0, NUM_EXAMPLES - sum(len(x) for x in self.examples['real']))
    if take:
      self.examples['gray'].append(out['gray_rgb'][mask][:take])
      self.examples['model'].append(out['model_rgb'][mask][:take])
      self.examples['real'].append(real[:take])
    self.count += int(mask.sum())

  def rows(self) -> dict[str, dict[str, float]]:
    """{'model', 'gray', 'real': {metric: dataset mean}} of the image metrics and realism."""
    rows: dict[str, dict[str, float]] = {'model': {}, 'gray': {}, 'real': {}}
    for row in ('model', 'gray'):
      summary = self.totals[row].compute()
      for name in ('psnr', 'ssim', 'ab_l1', 'ab_l2', 'auc', 'cf', 'delta_cf', 'cf_abs',
                   'delta_cf_abs'):
        rows[row][name] = float(summary[name])
      if row == 'model':
        rows['real']['cf'] = float(summary['cf_real'])
        rows['real']['cf_abs'] = float(summary['cf_abs_real'])
    for row, total in self.realism.items():
      rows[row]['realism'] = total / max(self.count, 1)
    return rows


def evaluate(workdir: epath.PathLike, step: int | str | None = None, *,
             data_dir: str | None = None, max_images: int | None = None,
             inception_weights: str | None = 'imagenet', use_cache: bool = True,
             progress: bool = True) -> dict[str, Any]:
  """Evaluates one checkpoint of a run; see `Evaluator` and `Evaluator.evaluate`.

  Args:
    workdir: the run.
    step: None (the latest epoch's), 'best' or a global train step.
    data_dir: a folder of colour photos instead of the run's validation split.
    max_images: only the first N evaluation images.
    inception_weights: 'imagenet', a weights file, None (skip IS / FID), or
      'random' (random weights, for tests of the code path only).
    use_cache: reuse stored results computed for the same key.
    progress: tqdm bars.

  Returns:
    The results dict (see `Evaluator.evaluate`); files in result['dir'].
  """
  evaluator = Evaluator(inception_weights, data_dir=data_dir, max_images=max_images,
                        progress=progress)
  return evaluator.evaluate(workdir, step, use_cache=use_cache)


# ----------------------------------------------------------------------------
# Reports.


def format_value(name: str, value: Any) -> str:
  """A metric value as the tables show it ('—' when missing)."""
  if value is None:
    return '—'
  return format(value, METRICS[name].fmt) if name in METRICS else str(value)


def metric_table(result: dict[str, Any]) -> list[list[str]]:
  """Rows of [system, value per metric] (header first), '—' where not meaningful or missing."""
  header = ['system'] + [f'{m.label} {"↑" if m.higher_is_better else "↓"}'
                         for m in METRICS.values()]
  table = [header]
  for row, label in ROW_LABELS.items():
    values = result['rows'].get(row, {})
    table.append([label] + [format_value(name, values.get(name)) if row in spec.rows else '—'
                            for name, spec in METRICS.items()])
  return table


def _write_text(path: epath.PathLike, text: str) -> None:
  """Writes a file that readers see complete or not at all (replacing an old one)."""
  path = os.fspath(path)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(tmp, path)


def _thumb_strip(images: np.ndarray) -> np.ndarray:
  side = LEADERBOARD_THUMB_SIZE
  tiles = [np.asarray(Image.fromarray(x).resize((side, side), Image.Resampling.LANCZOS))
           for x in images[:NUM_THUMBS]]
  return visualize.comparison_grid([np.stack(tiles)[i:i + 1] for i in range(len(tiles))])


_STYLE = ('body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}'
          'td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}'
          'td:first-child,th:first-child{text-align:left}.note{color:#a33}'
          '.info td{text-align:left}')


def write_report(result: dict[str, Any], directory: epath.PathLike) -> None:
  """Writes examples.png, thumbs.png, report.html and metrics.json into `directory`.

  Pops result['_examples'] ({'gray', 'model', 'real': uint8 [n, S, S, 3]}).
  """
  directory = epath.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  examples = result.pop('_examples', {})
  if examples:
    grid = visualize.comparison_grid([examples['gray'], examples['model'], examples['real']])
    images_lib.save_png(grid, directory / EXAMPLES_FILE)
    images_lib.save_png(_thumb_strip(examples['model']), directory / THUMBS_FILE)

  e = html.escape
  table = metric_table(result)
  def html_row(cells, tag):
    return '<tr>' + ''.join(f'<{tag}>{e(c)}</{tag}>' for c in cells) + '</tr>'

  rows_html = ''.join(html_row(r, 'th' if i == 0 else 'td') for i, r in enumerate(table))
  notes = ''.join(f'<p class="note">{e(METRICS[name].label)} missing: {e(reason)}</p>'
                  for name, reason in result.get('unavailable', {}).items())
  legend = ''.join(f'<li><b>{e(m.label)}</b>: {e(m.doc)}</li>' for m in METRICS.values())
  skipped = ', '.join(f'{n} {k}' for k, n in result.get('skipped', {}).items())
  info = [('run', result['workdir']), ('step', result['step']), ('epoch', result['epoch']),
          ('data', result['data'] + (f' ({skipped} files left out)' if skipped else '')),
          ('images', f'{result["num_images"]} at {result["image_size"]}x{result["image_size"]}'),
          ('Inception weights', result.get('inception_weights') or 'none'),
          ('seconds', ', '.join(f'{k} {v:.1f}' for k, v in result.get('seconds', {}).items()))]
  info_html = ''.join(f'<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>' for k, v in info)
  grid_html = ''
  if examples:
    # Small training sizes are shown enlarged, to about 256 px a tile.
    zoom = max(1, 256 // int(result['image_size']))
    width = zoom * (3 * (int(result['image_size']) + 2) + 2)
    grid_html = (f'<h2>Examples</h2><p>gray input | colorized | real photo</p>'
                 f'<img src="{EXAMPLES_FILE}" width="{width}" alt="examples">')
  page = (f'<!doctype html><html><head><meta charset="utf-8"><title>Evaluation: step '
          f'{result["step"]}</title><style>{_STYLE}</style></head><body>'
          f'<h1>Evaluation of step {result["step"]}</h1><table class="info">{info_html}</table>'
          f'<h2>Metrics</h2><table>{rows_html}</table>{notes}<ul>{legend}</ul>{grid_html}'
          f'</body></html>')
  _write_text(directory / REPORT_FILE, page)
  # Last: metrics.json is the cache entry, so a kill before it leaves no entry whose
  # report is missing.
  _write_text(directory / METRICS_FILE, json.dumps(result, indent=2, sort_keys=True))


# ----------------------------------------------------------------------------
# Selection.


@dataclasses.dataclass
class Selection:
  """What `select` did.

  Attributes:
    metric: the metric ranked by.
    ranking: results, best first; each with 'rank', 'workdir', 'step', 'epoch',
      'value', 'rows', 'dir'.
    out_dir: where the leaderboard was written.
    evaluated: (workdir, step) evaluated now; cached: read from the cache.
    unreadable: (workdir, step, reason) of checkpoints left out because their files
      cannot be read (damaged or truncated).
  """
  metric: str
  ranking: list[dict[str, Any]]
  out_dir: str
  evaluated: list[tuple[str, int]]
  cached: list[tuple[str, int]]
  unreadable: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)


def default_out_dir(workdirs: Sequence[str], metric: str) -> str:
  """<parent of the first run>/selection_<metric>: beside the runs it compares.

  If a leaderboard of other runs is there already (another selection among runs of
  the same folder), it is kept: this selection goes to selection_<metric>-<8 hex
  digits naming its runs> instead.
  """
  runs = sorted({os.path.abspath(os.fspath(w)) for w in workdirs})
  out_dir = os.path.join(os.path.dirname(os.path.abspath(os.fspath(workdirs[0]))),
                         f'selection_{metric}')
  try:
    with open(os.path.join(out_dir, 'selection.json'), encoding='utf-8') as f:
      selection = json.load(f)
    # The runs it was asked for (a run with nothing ranked is one too); older files: ranked.
    listed = sorted(set(selection.get('workdirs') or
                        [entry['workdir'] for entry in selection.get('ranking', [])]))
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return out_dir   # none there (or unreadable: replaced as before)
  if listed and listed != runs:
    out_dir += '-' + _sha('\0'.join(runs), 8)
  return out_dir


def rank(entries: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
  """Sorts results by the model's `metric`, best first; missing values last.

  Ties keep the input order and share a rank ('1224' ranking: two checkpoints with one
  value are both 2nd, and both in a top 2). Returns new dicts with 'value' and 'rank'
  (1-based).
  """
  spec = METRICS[metric]
  sign = -1.0 if spec.higher_is_better else 1.0
  have = [e for e in entries if e['rows']['model'].get(metric) is not None]
  lack = [e for e in entries if e['rows']['model'].get(metric) is None]
  ordered = sorted(have, key=lambda e: sign * e['rows']['model'][metric]) + lack
  ranked, previous = [], None
  for i, e in enumerate(ordered):
    value = e['rows']['model'].get(metric)
    tied = value is not None and previous is not None and value == previous['value']
    ranked.append(dict(e, value=value, rank=previous['rank'] if tied else i + 1))
    previous = ranked[-1]
  return ranked


def _run_labels(workdirs: Sequence[str]) -> dict[str, str]:
  """Short names for runs in a table: their folder names, or where two share one, their
  paths below the runs' common folder."""
  workdirs = sorted(set(workdirs))
  names = [os.path.basename(w.rstrip(os.sep)) for w in workdirs]
  if len(set(names)) == len(names):
    return dict(zip(workdirs, names))
  common = os.path.commonpath(workdirs) if len(workdirs) > 1 else os.path.dirname(workdirs[0])
  return {w: os.path.relpath(w, common) for w in workdirs}


def select(workdirs: Sequence[epath.PathLike] | epath.PathLike,
           metric: str = 'inception_score', *, top: int = 12, out_dir: str | None = None,
           evaluator: Evaluator | None = None, fallback_metric: str | None = None,
           use_cache: bool = True) -> Selection:
  """The paper's protocol: evaluate every checkpoint of every run, rank, record the best.

  Args:
    workdirs: the runs (or one run's folder).
    metric: a key of `METRICS` to rank by.
    top: how many lead the HTML leaderboard with thumbnails (the paper kept 12).
    out_dir: leaderboard folder (default `default_out_dir`).
    evaluator: an `Evaluator` (its Inception weights, data and image limit).
    fallback_metric: rank by this instead when `metric` cannot be computed.
    use_cache: reuse stored results.

  Returns:
    The `Selection`. Also writes leaderboard.{md,csv,html} and selection.json
    to out_dir and best.json into each run (see the module docstring).

  Raises:
    ValueError: an unknown metric, or no runs.
    MetricUnavailable: the metric needs Inception weights that cannot be had
      and no fallback was asked for (nothing is evaluated).
    FileNotFoundError: a workdir is not a run or has no checkpoints.
  """
  for name in (metric, fallback_metric):
    if name is not None and name not in METRICS:
      raise ValueError(f'Unknown metric {name!r}; choose one of {", ".join(METRICS)}.')
  if isinstance(workdirs, (str, os.PathLike)):   # one run, not the letters of its path
    workdirs = [workdirs]
  if not workdirs:
    raise ValueError('select needs at least one workdir.')
  if top < 1:
    raise ValueError(f'top must be >= 1, got {top}')
  # One run named twice (runs/r1, runs/r1/, a link to it) is ranked once.
  workdirs = list({os.path.realpath(os.fspath(w)): os.path.abspath(os.fspath(w))
                   for w in workdirs}.values())
  # The candidates are epochs' checkpoints (sec. 4); one saved on an interruption
  # holds half an epoch and goes once the run is resumed past it.
  plan = [(w, s) for w in workdirs for s in inference.available_steps(w, epoch_ends_only=True)]
  empty = [w for w in workdirs if not any(p[0] == w for p in plan)]
  if empty:
    interrupted = [w for w in empty if inference.available_steps(w)]
    raise FileNotFoundError(
        f'No checkpoints in {", ".join(empty)}.' + (
            f' {", ".join(interrupted)}: only a checkpoint saved on an interruption, to resume '
            'from; run its training command to finish the epoch.' if interrupted else ''))
  evaluator = evaluator or Evaluator()   # Inception is looked for only now
  if metric in _INCEPTION_METRICS and (not evaluator.inception.available or
                                       evaluator.inception.scorer() is None):
    reason = evaluator.inception.reason
    if fallback_metric is None or fallback_metric in _INCEPTION_METRICS:
      raise MetricUnavailable(
          f'Cannot rank by {metric}: {reason} Pass --inception-weights FILE with the '
          f'InceptionV3 ImageNet weights, or rank by another metric, e.g. --metric psnr '
          f'(or --fallback-metric psnr to do so only when Inception is unavailable).')
    logging.warning('Cannot rank by %s (%s); ranking by %s as asked.', metric, reason,
                    fallback_metric)
    metric = fallback_metric

  out_dir = os.path.abspath(out_dir or default_out_dir(workdirs, metric))
  files.check_writable(out_dir, 'the leaderboard')
  for workdir in workdirs:   # best.json and the evaluation results go into each run
    files.check_writable(os.path.join(workdir, EVAL_DIR), 'the evaluation results')
  data_keys = {json.dumps(evaluator.data_for(checkpoints.load_config(w)).key, sort_keys=True)
               for w in workdirs}
  if len(data_keys) > 1:
    logging.warning('The runs are evaluated on different validation sets; pass --data DIR to '
                    'rank them on the same photos.')
  results, unreadable = [], []
  for workdir, step in tqdm.tqdm(plan, unit='ckpt', disable=not evaluator.progress,
                                 desc='checkpoints', dynamic_ncols=True):
    try:
      results.append(evaluator.evaluate(workdir, step, use_cache=use_cache,
                                        image_progress=False))
    except checkpoints.CorruptCheckpoint as e:
      # One damaged checkpoint must not cost the ranking of all the others.
      logging.warning('Leaving out step %d of %s: %s', step, workdir, e)
      unreadable.append((workdir, step, str(e)))
  if not results:
    raise checkpoints.CorruptCheckpoint(
        f'None of the {len(plan)} checkpoints could be read: {unreadable[0][2]}')
  ranking = rank(results, metric)

  write_leaderboard(ranking, metric, top, out_dir, workdirs=workdirs)
  _record_best(ranking, metric, out_dir)
  return Selection(metric=metric, ranking=ranking, out_dir=out_dir,
                   evaluated=list(evaluator.evaluated), cached=list(evaluator.cached),
                   unreadable=unreadable)


def _record_best(ranking: list[dict[str, Any]], metric: str, out_dir: str) -> None:
  """Writes each run's best checkpoint of this selection to workdir/best.json."""
  spec = METRICS[metric]
  best: dict[str, dict[str, Any]] = {}
  for entry in ranking:
    if entry['value'] is not None and entry['workdir'] not in best:
      best[entry['workdir']] = entry
  for workdir in {e['workdir'] for e in ranking} - set(best):
    logging.warning('%s: no checkpoint has a value for %s; its best.json is left as it was.',
                    workdir, metric)
  created = datetime.datetime.now().isoformat(timespec='seconds')
  for workdir, entry in best.items():
    record = {'step': entry['step'], 'epoch': entry['epoch'], 'metric': metric,
              'value': entry['value'], 'higher_is_better': spec.higher_is_better,
              'rank': entry['rank'], 'winner': entry['rank'] == 1,
              'candidates': len(ranking), 'data': entry['data'],
              # Which save of the step was ranked: `inference.resolve_step` refuses 'best'
              # once the step is saved again (a run retrained from an earlier step).
              'checkpoint': (entry.get('key') or {}).get('checkpoint'),
              'selection': out_dir, 'created': created}
    _write_text(os.path.join(workdir, inference.BEST_FILE), json.dumps(record, indent=2))


_BOARD_METRICS = ('inception_score', 'fid', 'psnr', 'ssim', 'auc', 'ab_l1', 'cf', 'delta_cf',
                  'realism')


def leaderboard_table(ranking: Sequence[dict[str, Any]], metric: str) -> list[list[str]]:
  """The leaderboard as text cells: a header, then one row per ranked checkpoint."""
  columns = [metric] + [m for m in _BOARD_METRICS if m != metric]
  table = [['rank', 'run', 'step', 'epoch'] + [METRICS[m].label for m in columns]]
  labels = _run_labels([entry['workdir'] for entry in ranking]) if ranking else {}
  for entry in ranking:
    table.append([str(entry['rank']), labels[entry['workdir']], str(entry['step']),
                  str(entry['epoch'])] +
                 [format_value(m, entry['rows']['model'].get(m)) for m in columns])
  return table


def _gray_line(ranking: Sequence[dict[str, Any]]) -> str:
  gray = ranking[0]['rows']['gray'] if ranking else {}
  others = [e['rows']['gray'] for e in ranking[1:]]
  if any({m: g.get(m) for m in _BOARD_METRICS if m != 'realism'} !=
         {m: gray.get(m) for m in _BOARD_METRICS if m != 'realism'} for g in others):
    return ('Gray baseline (ab = 0): it differs between these checkpoints (other data or '
            'Inception weights); see each one\'s report.')
  # D realism of gray images depends on each checkpoint's discriminator: left out.
  return 'Gray baseline (ab = 0) on the same data: ' + ', '.join(
      f'{METRICS[m].label} {format_value(m, gray.get(m))}' for m in _BOARD_METRICS
      if 'gray' in METRICS[m].rows and gray.get(m) is not None and m != 'realism') + '.'


def write_leaderboard(ranking: list[dict[str, Any]], metric: str, top: int, out_dir: str,
                      workdirs: Sequence[str] = ()) -> None:
  """Writes leaderboard.md, leaderboard.csv, leaderboard.html and selection.json to out_dir."""
  spec = METRICS[metric]
  table = leaderboard_table(ranking, metric)
  direction = 'higher' if spec.higher_is_better else 'lower'
  title = f'Checkpoints ranked by {spec.label} ({direction} is better)'
  data = sorted({str(entry['data']) for entry in ranking}) or ['-']
  weights = sorted({str(entry.get('inception_weights') or 'none') for entry in ranking})
  data_line = (('Evaluation data: ' + data[0] if len(data) == 1 else
                'Evaluation data DIFFER between checkpoints: ' + '; '.join(data)) +
               '. Inception weights (IS, FID): ' + ', '.join(weights or ['none']) +
               f'. The top {top} are marked with *.')
  lines = [f'# {title}', '', data_line, '', '| ' + ' | '.join(table[0]) + ' |',
           '|' + '---|' * len(table[0])]
  for entry, row in zip(ranking, table[1:]):
    lines.append('| ' + ' | '.join([row[0] + ('*' if entry['rank'] <= top else '')] + row[1:]) +
                 ' |')
  lines += ['', _gray_line(ranking), '']
  _write_text(os.path.join(out_dir, 'leaderboard.md'), '\n'.join(lines))

  all_metrics = list(METRICS)
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(['rank', 'workdir', 'step', 'epoch', 'value'] + all_metrics + ['result_dir'])
  for entry in ranking:
    writer.writerow([entry['rank'], entry['workdir'], entry['step'], entry['epoch'],
                     entry['value']] + [entry['rows']['model'].get(m) for m in all_metrics] +
                    [entry.get('dir', '')])
  _write_text(os.path.join(out_dir, 'leaderboard.csv'), buffer.getvalue())

  e = html.escape
  body = []
  for entry, row in zip(ranking, table[1:]):
    thumb = ''
    if entry['rank'] <= top:
      path = os.path.join(entry.get('dir', ''), THUMBS_FILE)
      if os.path.isfile(path):
        with open(path, 'rb') as f:
          data = base64.b64encode(f.read()).decode('ascii')
        thumb = f'<img src="data:image/png;base64,{data}" alt="colorizations"><br>'
      report = os.path.relpath(os.path.join(entry.get('dir', ''), REPORT_FILE), out_dir)
      thumb += f'<a href="{e(report)}">report</a>'
    body.append('<tr>' + ''.join(f'<td>{e(c)}</td>' for c in row) + f'<td>{thumb}</td></tr>')
  page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>'
          f'<style>{_STYLE}</style></head><body><h1>{e(title)}</h1><p>{e(data_line)}</p>'
          '<table><tr>' + ''.join(f'<th>{e(h)}</th>' for h in table[0]) +
          '<th>first colorizations (top only)</th></tr>' + ''.join(body) +
          f'</table><p>{e(_gray_line(ranking))}</p></body></html>')
  _write_text(os.path.join(out_dir, 'leaderboard.html'), page)
  _write_text(os.path.join(out_dir, 'selection.json'), json.dumps(
      {'metric': metric, 'higher_is_better': spec.higher_is_better, 'top': top,
       'workdirs': sorted(os.fspath(w) for w in workdirs),
       'ranking': [{k: v for k, v in entry.items() if k != 'key'} for entry in ranking]},
      indent=2))
