"""A trained generator, restored from its workdir, colorizing photos of any size.

  colorizer = Colorizer.from_workdir('runs/paper', step='best')
  colour = colorizer.colorize(PIL.Image.open('old.jpg'))   # PIL in, PIL out

Restore: `restore(workdir, step)` reads the run's config.json and the nets'
weights from one orbax checkpoint (the latest, the one `select` recorded in
workdir/best.json, or a given step) into a state replicated over *this*
machine's devices, whatever number of devices saved it. Only the weights are
read (orbax partial restore), never the Adam states, which are twice their size;
a `Colorizer` reads only the generator's.

Full resolution, as Zhang et al. (2016), DeOldify and DDColor do it: the
generator sees L resized to its square render size, its ab is resized back to
the original size (bilinear; Pillow's resampling is antialiased when it
shrinks) and joined with the original, full-resolution L. Only chroma comes from
the model, so every detail of the photo survives. The render size is the
training size S = 2^depth by default; the U-Net's depth is fixed when it is
trained, so it also runs at any multiple of 2^depth (2S, 3S, ...). It learnt
from S-pixel inputs: whether a larger render size colours a photo better is
for the photos at hand to show.

Aspect ratio: the whole image is stretched to the square render size and its ab
stretched back ('stretch', the default), rather than fitted inside the square
with symmetric padding and cropped back ('pad'). Measured on the ten offline
sample photos cut to aspect ratios 1:2, 2:3, 1:1, 3:2 and 2:1 (long side 256)
with two quickstart models (64 px): stretching gave the lower mean ab error and
the higher PSNR over all ratios (ab L1 7.84 vs 7.87, PSNR 24.48 vs 24.45 dB;
14.54 vs 14.58 and 20.33 vs 20.32 dB), padding won on portrait crops and lost
on landscape ones; the difference is small. Stretching also spends every render
pixel on the photo, and the training crops themselves distort aspect up to 4:3.
The same measurement preferred bilinear to bicubic upsampling of ab (ab L1 lower
by 0.04-0.05 at every ratio: bicubic overshoots at colour edges), so bilinear is
the default, as in Zhang et al.'s code.

Gamut: a colour (L, ab) outside sRGB is not clipped channel-wise (which changes
its lightness and hue) but has its chroma reduced, at constant L and hue, to
the gamut boundary (a 10-step bisection on the out-of-gamut pixels only). So
the output's L equals the input's L up to 8-bit rounding (< 0.5 L units).

Inputs: files Pillow reads, in any mode (decoded by `images.load_picture`):
EXIF orientation is applied (the output is upright as displayed), and an
embedded ICC profile (8-bit images); gray,
palette, CMYK and colour images are turned into their CIELAB lightness (colour
inputs are colorized as their gray version); 16-bit gray is read at full
precision; alpha is kept and copied into the output unchanged. Outputs are
RGB (or RGBA) PNG, written atomically by `images.save_png`: 16 bits per channel for
16-bit, 32-bit integer and float gray files (archival scans keep their tonal
precision), 8 for the rest.

Pixel-wise conversions at full resolution run as jitted functions over fixed-
size chunks of flattened pixels, so images of every size share three compiled
programs instead of compiling one per image shape.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import decimal
import glob
import itertools
import json
import logging
import numbers
import os
from typing import Any, Callable, Iterator, Sequence

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import tqdm

from colorize_jax import checkpoints
from colorize_jax import color
from colorize_jax import files
from colorize_jax import images
from colorize_jax import parallel
from colorize_jax import steps

BEST_FILE = 'best.json'
NETS = ('generator', 'discriminator')
ASPECT_MODES = ('stretch', 'pad')   # the first is the default
BATCH_SIZE = 8   # render-size images per generator call, by default
UPSAMPLE_FILTERS = {'bilinear': Image.Resampling.BILINEAR, 'bicubic': Image.Resampling.BICUBIC}

# Flattened-pixel chunk sizes: a handful of compiled shapes for all image sizes.
_PIXEL_CHUNKS = (1 << 12, 1 << 15, 1 << 18)
# No sRGB colour has a CIELAB chroma above 133.8 (pure blue): the gamut fit searches below
# this, so that its resolution (134 / 2^steps < 0.14 ab units) holds however far out of the
# gamut a colour is (a high `saturation` can put it thousands of units out).
_SRGB_MAX_CHROMA = 134.0
_GAMUT_BISECTION_STEPS = 10

# ----------------------------------------------------------------------------
# Restore.


@dataclasses.dataclass(frozen=True)
class Restored:
  """A checkpoint of a run, restored on this machine.

  Attributes:
    workdir: the run's directory.
    config: the run's config (from workdir/config.json).
    gan: the static model built from it.
    state: the `GANState` without optimizer states: step, rng and, for each
      restored net, its params and batch_stats (opt_state None); a net that
      was not asked for is None. Every leaf replicated over `mesh`.
    step: the checkpoint's global train step.
    meta: the checkpoint's JSON metadata (epoch, validation metrics, ...).
    mesh: this machine's device mesh.
  """
  workdir: epath.Path
  config: ml_collections.ConfigDict
  gan: steps.GAN
  state: steps.GANState
  step: int
  meta: dict[str, Any]
  mesh: jax.sharding.Mesh

  @property
  def epoch(self) -> int | None:
    return self.meta.get('epoch')


def read_best(workdir: epath.PathLike) -> dict[str, Any]:
  """The selection record `select` wrote in workdir/best.json.

  Returns:
    {'step': int, 'metric': str, 'value': float, 'rank': int, ...}.

  Raises:
    FileNotFoundError: no selection has been made for this run.
    ValueError: the file is malformed.
  """
  path = epath.Path(workdir) / BEST_FILE
  if not path.exists():
    raise FileNotFoundError(
        f'{path} not found: no checkpoint of {workdir} has been selected yet. Run '
        f'`launch.py select --workdirs {workdir}` first, or pass --step.')
  try:
    record = json.loads(path.read_text())
    int(record['step'])
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path} is malformed ({e}); rerun `launch.py select`.') from e
  return record


class _QuietReadOnly(logging.Filter):
  """Drops orbax's warnings that a read-only manager is read-only (it is meant to be)."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = str(record.msg)
    return not ('read_only=True' in message or 'read only' in message)


@contextlib.contextmanager
def _open_checkpoints(workdir: epath.PathLike) -> Iterator[checkpoints.Checkpoints]:
  quiet = _QuietReadOnly()
  logger = logging.getLogger('absl')
  logger.addFilter(quiet)
  try:
    ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  finally:
    logger.removeFilter(quiet)
  try:
    yield ckpts
  finally:
    ckpts.close()


def available_steps(workdir: epath.PathLike, *, epoch_ends_only: bool = False) -> list[int]:
  """Steps of the complete checkpoints saved in a run, ascending.

  With `epoch_ends_only`, only those saved at the end of an epoch, not on an
  interruption (a checkpoint whose metadata cannot be read counts as one: whoever
  reads it next reports the damage).

  Raises:
    FileNotFoundError: the workdir has no checkpoints folder.
  """
  with _open_checkpoints(workdir) as ckpts:
    saved = ckpts.all_steps()
    if not epoch_ends_only:
      return saved
    kept = []
    for step in saved:
      try:
        if ckpts.is_epoch_end(step):
          kept.append(step)
      except checkpoints.CorruptCheckpoint:
        kept.append(step)
    return kept


def _whole_number(value: Any) -> int | None:
  """`value` as an int if it is a whole number (an int, digits, 6.0, a 0-d array of one),
  else None: int() would turn 32.5 into 32, True into 1 and Fraction(65, 2) into 32."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  if isinstance(value, (bool, np.bool_)):
    return None
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, str):
    return int(value) if value.strip().lstrip('+-').isdigit() else None
  if isinstance(value, (numbers.Real, decimal.Decimal)):
    try:
      return int(value) if float(value).is_integer() else None
    except (OverflowError, ValueError):
      return None
  return None


def resolve_step(workdir: epath.PathLike, step: int | str | None = None,
                 saved: Sequence[int] | None = None) -> int:
  """The checkpoint step meant by `step`.

  Args:
    workdir: the run's directory.
    step: None or 'latest' (the latest checkpoint saved at an epoch's end: one
      saved on an interruption only serves to resume, unless it is all there is),
      'best' (the one recorded by `select` in workdir/best.json), or a global train
      step (int or digits; any saved checkpoint).
    saved: the run's saved steps, if already known.

  Returns:
    A step that has a complete checkpoint.

  Raises:
    FileNotFoundError: no checkpoints, no selection, or no checkpoint at `step`.
    ValueError: `step` is none of the above.
  """
  saved = list(saved) if saved is not None else available_steps(workdir)
  if not saved:
    raise FileNotFoundError(f'No checkpoint in {workdir}.')
  if step is None or step == 'latest':
    ends = available_steps(workdir, epoch_ends_only=True)
    if not ends:
      logging.warning('%s holds only checkpoints saved on an interruption (mid-epoch): using '
                      'step %d.', workdir, saved[-1])
      return saved[-1]
    if ends[-1] != saved[-1]:
      logging.info('Using step %d, the latest epoch\'s checkpoint (step %d was saved on an '
                   'interruption, to resume from; --step %d uses it).', ends[-1], saved[-1],
                   saved[-1])
    return ends[-1]
  if step == 'best':
    best = read_best(workdir)
    chosen = int(best['step'])
    if chosen not in saved:
      raise FileNotFoundError(
          f'{epath.Path(workdir) / BEST_FILE} selects step {chosen}, which is no longer saved '
          f'(saved steps: {saved}); rerun `launch.py select`.')
    if best.get('checkpoint') not in (None, checkpoints.commit_id(workdir, chosen)):
      raise FileNotFoundError(
          f'{epath.Path(workdir) / BEST_FILE} selects step {chosen}, which was saved again '
          'since (the run was retrained from an earlier step): the weights there are not '
          'the ones ranked. Rerun `launch.py select`, or pass --step.')
    return chosen
  chosen = _whole_number(step)
  if chosen is None:
    raise ValueError(f"step must be None, 'latest', 'best' or an integer, got {step!r}")
  if chosen not in saved:
    raise FileNotFoundError(f'No checkpoint at step {chosen} in {workdir}; saved steps: {saved}')
  return chosen


def restore(workdir: epath.PathLike, step: int | str | None = None, *,
            mesh: jax.sharding.Mesh | None = None,
            nets: Sequence[str] = NETS) -> Restored:
  """Restores the weights of a run's checkpoint, replicated over this machine's devices.

  Only the step, the RNG key and the params and batch statistics of `nets` are
  read from disk (`checkpoints.Checkpoints.restore_subtree`); the optimizer
  states, twice the size of the params, never are. The checkpoint may have been
  saved from any number of devices: orbax reads it into the shardings of
  `steps.abstract_state` on this machine's mesh.

  Args:
    workdir: the run's directory (config.json and checkpoints/).
    step: see `resolve_step` (None: the latest epoch's; 'best'; an int).
    mesh: devices to replicate onto; default a mesh of all local devices.
    nets: which nets to restore, some of ('generator', 'discriminator'), or one name.

  Returns:
    The `Restored` checkpoint.

  Raises:
    FileNotFoundError: not a run, no such checkpoint, no selection for 'best'.
    ValueError: a bad `step` or `nets`, or a config the code cannot build.
  """
  nets = (nets,) if isinstance(nets, str) else tuple(nets)   # 'generator' is one net
  unknown = sorted(set(nets) - set(NETS))
  if unknown or not nets:
    raise ValueError(f'nets={tuple(nets)!r}: expected some of {NETS}.')
  workdir = epath.Path(os.path.abspath(os.fspath(workdir)))
  config = checkpoints.load_config(workdir)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  gan = steps.GAN.from_config(config)
  abstract = steps.abstract_state(gan, config.image_size, parallel.replicated(mesh))
  wanted = {'step': abstract.step, 'rng': abstract.rng}
  for name in nets:
    net = getattr(abstract, name)
    wanted[name] = {'params': net.params, 'batch_stats': net.batch_stats}
  with _open_checkpoints(workdir) as ckpts:
    chosen = resolve_step(workdir, step, ckpts.all_steps())
    tree, meta = ckpts.restore_subtree(wanted, chosen)
  weights = {name: steps.NetState(params=tree[name]['params'],
                                  batch_stats=tree[name]['batch_stats'], opt_state=None)
             if name in tree else None for name in NETS}
  state = steps.GANState(step=tree['step'], rng=tree['rng'], **weights)
  return Restored(workdir=workdir, config=config, gan=gan, state=state, step=chosen,
                  meta=meta, mesh=mesh)


# ----------------------------------------------------------------------------
# Full-resolution pixel arithmetic (jitted over fixed-size pixel chunks).


# sRGB's own surface colours (a channel at 0 or 255) come back from Lab up to 1e-5 past
# [0, 1] in float32: within this they are in the gamut, not cut (invisible: 0.013 of a level).
_GAMUT_TOLERANCE = 5e-5


def _outside_gamut(rgb: jnp.ndarray) -> jnp.ndarray:
  """[P, 3] unclipped sRGB (`color.lab_to_rgb(lab, clip=False)`) -> bool [P]."""
  return jnp.any((rgb < -_GAMUT_TOLERANCE) | (rgb > 1.0 + _GAMUT_TOLERANCE), axis=-1)


_lightness = jax.jit(color.rgb_to_gray_l)


@jax.jit
def _lab_to_rgb_checked(lab: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  rgb = color.lab_to_rgb(lab, clip=False)
  return jnp.clip(rgb, 0.0, 1.0), _outside_gamut(rgb)


@jax.jit
def _lab_to_rgb_fitted(lab: jnp.ndarray) -> jnp.ndarray:
  """Lab [P, 3] -> sRGB [P, 3] with chroma cut to the gamut at constant L and hue."""
  l, ab = lab[:, :1], lab[:, 1:]
  chroma = jnp.linalg.norm(ab, axis=-1, keepdims=True)
  top = jnp.minimum(1.0, _SRGB_MAX_CHROMA / jnp.maximum(chroma, 1e-6))  # fraction of ab

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    out = _outside_gamut(color.lab_to_rgb(jnp.concatenate([l, mid * ab], axis=-1),
                                          clip=False))[:, None]
    return jnp.where(out, lo, mid), jnp.where(out, mid, hi)

  lo, _ = jax.lax.fori_loop(0, _GAMUT_BISECTION_STEPS, bisect,
                            (jnp.zeros_like(l), top))
  return color.lab_to_rgb(jnp.concatenate([l, lo * ab], axis=-1))


def _map_pixels(fn: Callable[..., Any], x: np.ndarray) -> Any:
  """Applies a jitted per-pixel `fn` to x [P, C] chunk by chunk; returns numpy like fn's output."""
  pending, start = [], 0
  while start < len(x):
    rest = len(x) - start
    size = next((c for c in _PIXEL_CHUNKS if c >= rest), _PIXEL_CHUNKS[-1])
    part = x[start:start + size]
    valid = len(part)
    if valid < size:
      part = np.concatenate([part, np.zeros((size - valid,) + part.shape[1:], part.dtype)])
    # Dispatched before any result is read, so the runtime can overlap chunks.
    pending.append((fn(part), valid))
    start += size
  outputs = [jax.tree.map(lambda y, n=valid: np.asarray(y)[:n], out) for out, valid in pending]
  return jax.tree.map(lambda *ys: np.concatenate(ys), *outputs)


def lightness(rgb: np.ndarray) -> np.ndarray:
  """CIELAB L of sRGB: float32 [H, W, 3] in [0, 1] -> float32 [H, W] in [0, 100]."""
  h, w, _ = rgb.shape
  return _map_pixels(_lightness, np.asarray(rgb, np.float32).reshape(-1, 3)).reshape(h, w)


def lab_to_rgb_in_gamut(l: np.ndarray, ab: np.ndarray) -> np.ndarray:
  """Joins L [H, W] in [0, 100] and ab [H, W, 2] into sRGB float32 [H, W, 3] in [0, 1].

  Colours outside sRGB keep their L and hue and lose chroma down to the gamut
  boundary, so the result's lightness is L (to float precision).
  """
  h, w = l.shape
  lab = np.concatenate([l[..., None], ab], axis=-1).astype(np.float32).reshape(-1, 3)
  rgb, outside = _map_pixels(_lab_to_rgb_checked, lab)
  index = np.flatnonzero(outside)
  if index.size:
    rgb[index] = _map_pixels(_lab_to_rgb_fitted, lab[index])
  return rgb.reshape(h, w, 3)


def _resize_plane(x: np.ndarray, width: int, height: int, resample) -> np.ndarray:
  """float32 [h, w] -> [height, width]; Pillow antialiases when shrinking."""
  if x.shape == (height, width):
    return x.astype(np.float32, copy=True)
  return np.asarray(Image.fromarray(np.ascontiguousarray(x, np.float32)).resize(
      (width, height), resample), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class _Placement:
  """Where an image sits in the square render input: rows [top, top+h), cols [left, left+w)."""
  top: int
  left: int
  height: int
  width: int


def _render_input(l: np.ndarray, size: int, aspect: str) -> tuple[np.ndarray, _Placement]:
  """Full-resolution L [H, W] -> the generator's L [size, size] and where the photo is in it."""
  h, w = l.shape
  if aspect == 'stretch':
    return _resize_plane(l, size, size, Image.Resampling.BILINEAR), _Placement(0, 0, size, size)
  scale = size / max(h, w)
  ph, pw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
  small = _resize_plane(l, pw, ph, Image.Resampling.BILINEAR)
  top, left = (size - ph) // 2, (size - pw) // 2
  padded = np.pad(small, ((top, size - ph - top), (left, size - pw - left)), mode='symmetric')
  return padded, _Placement(top, left, ph, pw)


# ----------------------------------------------------------------------------
# The colorizer.


def _as_picture(image: Any) -> tuple[images.Picture,
                                     Callable[[np.ndarray, images.Picture], Any]]:
  """Decodes a PIL image or an array; returns it and a function making the output kind.

  The function takes the colorized rgb float32 [H, W, 3] in [0, 1] and the picture.
  """
  if isinstance(image, Image.Image):
    if min(image.size) < 1:
      raise ValueError(f'Empty image of size {image.size[0]}x{image.size[1]}.')
    try:
      picture = images.picture_from_pil(image)
    except ValueError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # Pillow decodes lazily: a broken file opened by the caller fails only here.
      raise images.UnreadableImage(f'{type(e).__name__}: {e}') from e

    def to_pil(rgb, pic):
      rgb8 = images.to_uint8(rgb)
      if pic.alpha is None:
        return Image.fromarray(rgb8)
      return Image.fromarray(np.dstack([rgb8, pic.alpha.astype(np.uint8)]))

    return picture, to_pil

  if isinstance(image, (str, bytes, os.PathLike)):
    raise ValueError(f'Expected a PIL image or an array, got the path or bytes {image!r:.80}: '
                     'open it first (PIL.Image.open), or use colorize_files for files.')
  arr = np.asarray(image)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
    raise ValueError(f'Expected an image [H, W], [H, W, 3] or [H, W, 4], got shape {arr.shape}.')
  if min(arr.shape[:2]) < 1:
    raise ValueError(f'Empty image of shape {arr.shape}.')
  if arr.dtype == np.uint8:
    scale, out_dtype = 255.0, np.uint8
  elif arr.dtype == np.uint16:
    scale, out_dtype = 65535.0, np.uint16
  elif np.issubdtype(arr.dtype, np.floating):
    scale, out_dtype = 1.0, arr.dtype
    if not np.all(np.isfinite(arr)):
      raise ValueError('Float image contains NaN or infinite values.')
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
      raise ValueError(f'Float images must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; '
                       'divide by 255 or pass uint8.')
  else:
    raise ValueError(f'Unsupported image dtype {arr.dtype}: use uint8, uint16 or float in [0, 1].')
  values = np.clip(arr.astype(np.float32) / scale, 0.0, 1.0)
  alpha = None
  if arr.ndim == 2:
    rgb = np.repeat(values[..., None], 3, axis=-1)
  else:
    rgb = values[..., :3]
    if arr.shape[-1] == 4:
      alpha = arr[..., 3].copy()
  picture = images.Picture(np.ascontiguousarray(rgb), alpha)

  def to_array(rgb, pic):
    if out_dtype == np.uint8:
      out = images.to_uint8(rgb)
    elif out_dtype == np.uint16:
      out = images.to_uint16(rgb)
    else:
      out = rgb.astype(out_dtype)
    return out if pic.alpha is None else np.dstack([out, pic.alpha.astype(out.dtype)])

  return picture, to_array


class Colorizer:
  """Colorizes photos of any size with a trained generator (see the module docstring).

  Build it with `Colorizer.from_workdir`. `colorize` / `colorize_batch` take and
  return PIL images or numpy arrays; `colorize_files` streams files to PNGs.
  The generator runs in batches of `batch_size` render-size inputs, sharded
  over this machine's devices.
  """

  def __init__(self, gan: steps.GAN, generator: steps.NetState, image_size: int, *,
               render_size: int | None = None, batch_size: int = BATCH_SIZE,
               mesh: jax.sharding.Mesh | None = None, aspect: str = ASPECT_MODES[0],
               upsample: str = 'bilinear', step: int | None = None,
               workdir: epath.PathLike | None = None):
    """Wraps a generator.

    Args:
      gan: the static model.
      generator: the generator's `NetState` (params and batch statistics).
      image_size: the size the generator was trained at.
      render_size: the square size the generator runs at (default image_size):
        any multiple of 2^depth, the generator's depth (see `check_render_size`).
      batch_size: render-size images per generator call (rounded up to a
        multiple of the device count).
      mesh: devices (default all local devices).
      aspect: 'stretch' or 'pad', see the module docstring.
      upsample: 'bilinear' or 'bicubic', the filter that resizes ab to full size.
      step, workdir: where the weights came from (for logs and reports).
    """
    if aspect not in ASPECT_MODES:
      raise ValueError(f'aspect must be one of {ASPECT_MODES}, got {aspect!r}')
    if upsample not in UPSAMPLE_FILTERS:
      raise ValueError(f'upsample must be one of {tuple(UPSAMPLE_FILTERS)}, got {upsample!r}')
    if not _is_a(numbers.Integral, batch_size) or batch_size < 1:
      raise ValueError(f'batch_size must be an int >= 1, got {batch_size!r}')
    self.gan, self.image_size = gan, image_size
    if render_size is not None and not _is_a(numbers.Integral, render_size):
      raise ValueError(f'render_size must be an int, got {render_size!r}')
    self.render_size = image_size if render_size is None else int(render_size)
    self.mesh = mesh if mesh is not None else parallel.make_mesh()
    devices = self.mesh.devices.size
    self.batch_size = -(-batch_size // devices) * devices
    self.aspect, self.step, self.workdir = aspect, step, workdir
    self._upsample = UPSAMPLE_FILTERS[upsample]
    check_render_size(gan, self.render_size, image_size)
    # Kernels laid out once for the render size (steps.prepare_generator): 3.5-5.5% faster.
    self._generator = jax.device_put(
        steps.prepare_generator(gan, generator, self.render_size),
        parallel.replicated(self.mesh))
    self._predict = _predict_fn(gan, self.mesh)

  @classmethod
  def from_workdir(cls, workdir: epath.PathLike, step: int | str | None = None,
                   **kwargs) -> 'Colorizer':
    """Restores a run's generator: step None (latest), 'best' (see `select`) or an int.

    Keyword arguments go to the constructor (render_size, batch_size, aspect, ...).
    """
    restored = restore(workdir, step, mesh=kwargs.pop('mesh', None), nets=('generator',))
    return cls(restored.gan, restored.state.generator, restored.config.image_size,
               mesh=restored.mesh, step=restored.step, workdir=restored.workdir, **kwargs)

  def predict_ab(self, l: np.ndarray) -> np.ndarray:
    """The generator's colours: L float [N, R, R] in [0, 100] -> ab float32 [N, R, R, 2].

    R is the render size; ab is in [-110, 110].
    """
    l = np.asarray(l, np.float32)
    r = self.render_size
    if l.ndim != 3 or l.shape[1:] != (r, r):
      raise ValueError(f'predict_ab expects L [N, {r}, {r}], got {l.shape}')
    out = []
    for start in range(0, len(l), self.batch_size):
      part = l[start:start + self.batch_size]
      valid = len(part)
      if valid < self.batch_size:  # one compiled shape: pad the last batch
        part = np.concatenate([part, np.zeros((self.batch_size - valid, r, r), np.float32)])
      out.append(np.asarray(self._predict(self._generator, part))[:valid])
    return np.concatenate(out) if out else np.zeros((0, r, r, 2), np.float32)

  def _prepare(self, picture: images.Picture) -> tuple[np.ndarray, np.ndarray, _Placement]:
    l = lightness(picture.rgb)
    small, placement = _render_input(l, self.render_size, self.aspect)
    return l, small, placement

  def _finish(self, l: np.ndarray, ab_small: np.ndarray, placement: _Placement,
              saturation: float) -> np.ndarray:
    """Full-size rgb float32 [H, W, 3] from full L [H, W] and the model's ab [R, R, 2]."""
    h, w = l.shape
    p = placement
    region = ab_small[p.top:p.top + p.height, p.left:p.left + p.width]
    ab = np.stack([_resize_plane(region[..., c], w, h, self._upsample) for c in range(2)],
                  axis=-1)
    return lab_to_rgb_in_gamut(l, ab * np.float32(saturation))

  def colorize_batch(self, images: Sequence[Any], saturation: float = 1.0) -> list[Any]:
    """Colorizes images of any sizes, returning each as the kind it was given.

    Args:
      images: PIL images (any mode; EXIF orientation applied), or numpy arrays
        uint8 / uint16 [H, W], [H, W, 3], [H, W, 4] or float [0, 1] of those
        shapes. Colour inputs are colorized as their gray version; alpha is kept.
      saturation: factor applied to the predicted ab (1: as predicted, 0: gray).

    Returns:
      One output per input: PIL 'RGB' / 'RGBA'; arrays of the input's dtype,
      [H, W, 3] (also for [H, W] inputs) or [H, W, 4]. The output's CIELAB L
      is the input's (up to the output dtype's rounding).
    """
    check_saturation(saturation)
    if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim != 4):
      # Iterating one image would colorize its rows as images.
      raise ValueError('colorize_batch takes a sequence of images (a list, or an array '
                       f'[N, H, W, C]); got {type(images).__name__} '
                       f'{getattr(images, "shape", "")}: for one image use colorize().')
    decoded = [_as_picture(image) for image in images]
    prepared = [self._prepare(picture) for picture, _ in decoded]
    if not prepared:
      return []
    ab = self.predict_ab(np.stack([small for _, small, _ in prepared]))
    outputs = []
    for (picture, make), (l, _, placement), ab_small in zip(decoded, prepared, ab):
      outputs.append(make(self._finish(l, ab_small, placement, saturation), picture))
    return outputs

  def colorize(self, image: Any, saturation: float = 1.0) -> Any:
    """Colorizes one image; see `colorize_batch`."""
    return self.colorize_batch([image], saturation)[0]

  def colorize_files(self, jobs: Sequence['Job'], saturation: float = 1.0,
                     progress: bool = True, workers: int | None = None,
                     png_compress_level: int = images.PNG_COMPRESS_LEVEL) -> 'RunSummary':
    """Colorizes image files into PNGs, streaming groups of `batch_size` images.

    Reading and writing run in a thread pool (Pillow releases the GIL) while the
    generator runs; an unreadable input is reported and skipped.

    Args:
      jobs: `Job`s or (source, destination) pairs, e.g. from `plan_jobs`.
      saturation: factor on the predicted ab.
      progress: show a tqdm progress bar (images).
      workers: threads for reading and writing (default: `images.io_threads()`).
      png_compress_level: zlib level of the PNGs, 0..9 (lower: faster, larger).

    Returns:
      A `RunSummary`: the written destinations and the failures with reasons.

    Raises:
      ValueError: a destination's name does not end in .png.
      OverwriteError: before anything is read, if a destination is one of the sources,
        two jobs share a destination, or a destination exists and is not a colorization
        of its job's source (a file colorize did not write, another photo's
        colorization, one edited since): those are never replaced. Colorizations of the
        same source are.
    """
    check_saturation(saturation)
    images.check_png_compress_level(png_compress_level)  # before any file is read
    jobs = [job if isinstance(job, Job) else Job(*map(os.fspath, job)) for job in jobs]
    for job in jobs:   # PNG data under another name would not be known as a colorization
      if not job.destination.lower().endswith('.png'):
        raise ValueError(f'{job.destination}: colorize writes PNGs; give it a .png name')
    _refuse_overwrites(jobs)
    _refuse_replacing_others(jobs)
    summary = RunSummary()
    workers = workers or images.io_threads()
    groups = [jobs[i:i + self.batch_size] for i in range(0, len(jobs), self.batch_size)]

    def read(job):
      """(job, error, (alpha, bit depth, dpi), (L, render-size L, placement)); of the
      picture only L, alpha, bit depth and dpi are kept."""
      try:
        picture = images.load_picture(job.source)
      except images.UnreadableImage as e:
        return job, str(e), None, None
      if picture.frames > 1:
        summary.notes.append((job.source, f'{picture.frames} frames or pages: only the first '
                                          'was colorized'))
      return job, None, (picture.alpha, picture.bit_depth, picture.dpi), self._prepare(picture)

    def write(item):
      (job, _, (alpha, bit_depth, dpi), (l, _, placement)), ab_small = item
      try:
        images.save_png(self._finish(l, ab_small, placement, saturation), job.destination,
                        alpha, compress_level=png_compress_level, bit_depth=bit_depth,
                        dpi=dpi, software=images.SOFTWARE,
                        source=images.source_id(job.source))
      except OSError as e:
        return job, f'{job.destination}: cannot write: {e}'
      except ValueError as e:   # one image's failure (NaN colours, say) is that image's only
        return job, f'{job.source}: {e}'
      return job, None

    bar = tqdm.tqdm(total=len(jobs), unit='img', disable=not progress, dynamic_ncols=True)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      pending = pool.map(read, groups[0]) if groups else iter(())
      for index in range(len(groups)):
        loaded = list(pending)
        if index + 1 < len(groups):  # read the next group while this one runs
          pending = pool.map(read, groups[index + 1])
        good = [item for item in loaded if item[1] is None]
        for job, error, _, _ in loaded:
          if error is not None:
            summary.failed.append((job.source, error))
            bar.update(1)
        if good:
          ab = self.predict_ab(np.stack([prepared[1] for *_, prepared in good]))
          for job, error in pool.map(write, zip(good, ab)):
            if error is None:
              summary.written.append(job.destination)
            else:
              summary.failed.append((job.source, error))
            bar.update(1)
    bar.close()
    return summary


# Compiled generators, shared by every Colorizer of the same architecture and mesh.
_PREDICT_FNS: dict[Any, Callable[..., Any]] = {}


def _predict_fn(gan: steps.GAN, mesh: jax.sharding.Mesh) -> Callable[..., Any]:
  """Jitted (generator PreparedNet or NetState, L [B, R, R] in [0, 100]) -> ab [B, R, R, 2]."""
  key = (gan.generator, mesh)
  if key not in _PREDICT_FNS:
    def predict(g, l):
      ab_norm = steps.generate_ab(gan, g, color.normalize_l(l[..., None]))
      return color.denormalize_ab(ab_norm.astype(jnp.float32))

    replicated = parallel.replicated(mesh)
    _PREDICT_FNS[key] = steps.jit(predict, in_shardings=(replicated, parallel.batch_sharded(mesh)),
                                  out_shardings=replicated)
  return _PREDICT_FNS[key]


def check_render_size(gan: steps.GAN, render_size: int, image_size: int) -> None:
  """Raises ValueError unless the generator can run on [N, render_size, render_size, 1].

  `models.make_models` fixes the U-Net's depth at its training size S = 2^depth
  (a 1x1 bottleneck there), and a net of that depth runs at any multiple of
  2^depth: 2S gives a 2x2 bottleneck, and so on. A generator whose depth
  follows its input (depth None) has layers for its training size only.

  Args:
    gan: the static model.
    render_size: the square size to run at.
    image_size: the size the generator was trained at.
  """
  depth = gan.generator.depth
  if depth is None:
    if render_size != image_size:
      raise ValueError(
          f'This generator\'s depth follows its input size, so its weights fit its training '
          f'size only: use --render-size {image_size}, got {render_size}.')
    return
  multiple = 2 ** depth
  if render_size < 1 or render_size % multiple:
    raise ValueError(
        f'This generator ({depth} levels, trained at {image_size}x{image_size}) runs at square '
        f'sizes that are multiples of {multiple}, e.g. --render-size {multiple} or '
        f'{2 * multiple}; got {render_size}.')


def _is_a(kind: type, value: Any) -> bool:
  """Whether `value` is a number of `kind` (numbers.Integral, numbers.Real), bools not
  counted (True would silently be 1)."""
  return isinstance(value, kind) and not isinstance(value, bool)


# Past this every predicted colour is already at the gamut's edge (ab is ~1 unit at the
# least, sRGB's chroma below 134), while float32 arithmetic on ab * 1e20 overflows into
# gray, black or NaN images.
MAX_SATURATION = 1000.0


def check_saturation(saturation: float) -> None:
  """Raises ValueError unless `saturation` is a real number in [0, MAX_SATURATION]."""
  if not _is_a(numbers.Real, saturation) or not (
      np.isfinite(saturation) and 0 <= saturation <= MAX_SATURATION):
    raise ValueError(f'saturation must be a number in [0, {MAX_SATURATION:g}] (at '
                     f'{MAX_SATURATION:g} every colour is at the gamut\'s edge), got '
                     f'{saturation!r}')


# ----------------------------------------------------------------------------
# Files in, files out.


@dataclasses.dataclass(frozen=True)
class Job:
  """One input file and the PNG it becomes."""
  source: str
  destination: str


@dataclasses.dataclass
class RunSummary:
  """What `colorize_files` did: written PNGs, (source, reason) failures, and (source,
  note) for inputs written with something left out (the later frames of an animation)."""
  written: list[str] = dataclasses.field(default_factory=list)
  failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  notes: list[tuple[str, str]] = dataclasses.field(default_factory=list)


class OverwriteError(ValueError):
  """An output path would replace an input file, or outputs would land among the inputs
  (so that the next run would read them as photos)."""


def _refuse_overwrites(jobs: Sequence[Job]) -> None:
  """Raises OverwriteError if a job's destination is some job's source (links resolved)."""
  sources = {os.path.realpath(job.source) for job in jobs}
  for job in jobs:
    if os.path.realpath(job.destination) in sources:
      raise OverwriteError(
          f'Refusing to write {job.destination}: it is one of the inputs. Choose another --out '
          'folder (inputs are never overwritten).')


def destination_holds(job: Job, replacing: bool = True) -> str:
  """What is at a job's destination: 'nothing', 'its colorization' (of this job's source;
  also a colorization that recorded no source), 'another colorization' (of another photo),
  'an edited colorization' (its pixels changed since colorize wrote it; told apart only
  when `replacing`, as it reads the whole file) or 'a file colorize did not write'. Only
  the first two may be written over."""
  if not os.path.lexists(job.destination):
    return 'nothing'
  made_from = images.colorized_source(job.destination)
  if made_from is None:
    return 'a file colorize did not write'
  if made_from not in ('', images.source_id(job.source)):
    return 'another colorization'
  if replacing and images.was_edited(job.destination):
    return 'an edited colorization'
  return 'its colorization'


def _refuse_replacing_others(jobs: Sequence[Job]) -> None:
  """Raises OverwriteError if two jobs share a destination (one result would be lost), or
  a destination holds what may not be written over (`destination_holds`)."""
  seen: dict[str, str] = {}
  for job in jobs:
    key = os.path.realpath(job.destination)
    if key in seen:
      raise OverwriteError(f'{job.source} and {seen[key]} would both be written to '
                           f'{job.destination}: give them other destinations.')
    seen[key] = job.source
    if destination_holds(job) not in ('nothing', 'its colorization'):
      raise OverwriteError(
          f'Refusing to write {job.destination}: it exists and is not a colorization of '
          f'{job.source} (a file colorize did not write, another photo\'s colorization, or '
          'one edited since). '
          'Move it, or choose another destination.')


def _has_glob(text: str) -> bool:
  return any(c in text for c in '*?[')


def _glob_base(pattern: str) -> str:
  """The folder a glob pattern looks in: its leading components without wildcards."""
  parts = pattern.split(os.sep)
  fixed = list(itertools.takewhile(lambda p: not _has_glob(p), parts[:-1]))
  return os.sep.join(fixed) or ('/' if pattern.startswith(os.sep) else '.')


def _output_names(relative: Sequence[str]) -> list[str]:
  """Distinct PNG names for input paths `relative` to the output folder's root.

  'x/a.jpg' -> 'x/a.png'; inputs whose names would clash keep their full names
  ('a.jpg.png', 'a.png.png'), and again where a full name is another input's name
  ('a.jpg.png' of the input 'a.jpg.png'). Names that differ only in letter case
  clash too: a case-insensitive file system (macOS, Windows) would write one file.
  """
  key = str.casefold
  names = [os.path.splitext(rel)[0] + '.png' for rel in relative]
  full = [False] * len(names)
  while True:
    counts = collections.Counter(map(key, names))
    clashing = [i for i, name in enumerate(names) if counts[key(name)] > 1 and not full[i]]
    if not clashing:
      break
    for i in clashing:
      names[i], full[i] = relative[i] + '.png', True
  # Full names can still clash where inputs differ in letter case alone: number the later ones.
  taken = set()
  for i, rel in enumerate(relative):
    number = 1
    while key(names[i]) in taken:
      number += 1
      names[i] = f'{rel}.{number}.png'
    taken.add(key(names[i]))
  return names


def plan_jobs(inputs: Sequence[str], out_dir: str) -> tuple[list[Job], list[tuple[str, str]]]:
  """Expands inputs (files, folders, globs) into jobs writing PNGs under out_dir.

  Output names mirror the inputs' paths relative to their deepest common folder
  (a single folder: paths inside it; files of one folder: their names), with
  the extension replaced by .png; where two inputs would then collide (a.jpg and
  a.png, or names differing only in case) both keep their full names (a.jpg.png,
  a.png.png), so that no two outputs share a name. Folders are searched
  recursively for files with `images.IMAGE_EXTENSIONS`; files named explicitly
  are tried whatever their extension. What a folder or a pattern finds that an
  earlier colorization wrote (`images.is_colorized_output`, wherever it lies) or
  that lies inside out_dir is left out (with a logged warning), so that a rerun
  does not take outputs for photos; an input folder inside out_dir (or out_dir
  itself) is refused for the same reason.

  Args:
    inputs: paths of files or folders, or glob patterns ('**' recursive); one
      path alone is taken as a list of one.
    out_dir: the output folder.

  Returns:
    (jobs, missing): the jobs in input order, and (input, reason) for inputs
    that matched nothing, folders among them that could not be listed, and inputs
    whose output name would be too long for a file system.

  Raises:
    OverwriteError: an output would replace one of the inputs, or an input folder
      is out_dir or lies inside it.
  """
  if isinstance(inputs, (str, os.PathLike)):
    inputs = [inputs]   # iterating a string would take each character for a path
  out_real = os.path.realpath(out_dir)
  # (path, folder its name is relative to, found by a folder or pattern rather than named)
  found: list[tuple[str, str, bool]] = []
  missing = []

  def add_folder(folder: str) -> None:
    real = os.path.realpath(folder)
    if files.within(real, out_real):
      raise OverwriteError(
          f'The output folder {out_dir} is, or contains, the input folder {folder}: a rerun '
          'would take the PNGs written there for photos. Choose an --out outside the inputs '
          '(a new subfolder of them is fine: it is left out of the inputs).')
    if files.within(out_real, real):
      logging.warning('Leaving out %s: it is the output folder, inside the input %s.',
                      out_dir, folder)
    found.extend((path, os.path.abspath(folder), True)
                 for path in images.list_images(folder, out_real, unreadable=missing))

  for arg in inputs:
    arg = os.fspath(arg)
    if os.path.isdir(arg):
      add_folder(arg)
    elif os.path.exists(arg):
      found.append((arg, os.path.dirname(os.path.abspath(arg)), False))
    elif _has_glob(arg):
      matches = sorted(glob.glob(arg, recursive=True))
      if not matches:
        missing.append((arg, 'no file matches this pattern'))
      # A pattern's matches in out_dir are outputs only if out_dir is not where the pattern
      # looks ('album/*.jpg' with --out album matches the user's photos there).
      base = _glob_base(arg)
      outputs = set() if os.path.realpath(base) == out_real else {
          m for m in matches if files.within(os.path.realpath(m), out_real)}
      if outputs:
        logging.warning('Leaving out %d matches of %s in the output folder %s.', len(outputs),
                        arg, out_dir)
      for match in matches:
        if match in outputs:
          continue
        if os.path.isdir(match):
          add_folder(match)
        else:
          found.append((match, os.path.dirname(os.path.abspath(match)), True))
    else:
      missing.append((arg, 'no such file or folder'))

  seen, unique, colorized = set(), [], []
  for path, root, by_search in found:
    key = os.path.realpath(path)
    if key in seen:
      continue
    seen.add(key)
    if by_search and images.is_colorized_output(path):
      colorized.append(path)
    else:
      unique.append((path, root))
  if colorized:
    logging.warning('Leaving out %d images that colorize wrote (e.g. %s): outputs of an '
                    'earlier run, not photos.', len(colorized), colorized[0])
  if not unique:
    return [], missing
  base = os.path.commonpath([root for _, root in unique])
  relative = [os.path.relpath(os.path.abspath(path), base) for path, _ in unique]
  names = _output_names(relative)
  jobs = []
  for (path, _), name in zip(unique, names):
    # Found now, not after the model ran: a name the file system cannot hold (two long
    # names that clash get their full names, with '.png' on top).
    limit = images.MAX_NAME_BYTES
    if max(len(os.fsencode(part)) for part in name.split(os.sep)) > limit:
      missing.append((path, f'its output name {name!r} is longer than {limit} bytes; rename '
                            'the photo'))
    else:
      jobs.append(Job(path, os.path.join(out_dir, name)))
  _refuse_overwrites(jobs)
  return jobs, missing
