"""Builds a Turing-test study: pairs of (real photo, its colorization) on disk.

Paper sec. 4: 40 participants saw 20 pairs of (real, generated) images and picked
the generated one. A study folder holds everything the server needs:

  study.json          manifest: pair ids, image names and which one is real
                      (server-side only: never served)
  images/<32hex>.png  the images, under opaque random names
  responses.sqlite    participants and answers (created by the server)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import pathlib
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from colorize_jax import files

MANIFEST = 'study.json'
IMAGES_DIR = 'images'
RESPONSES_DB = 'responses.sqlite'
REPORT_DIR = 'report'
SERVING_LOCK = '.serving.lock'   # held by `server.serve` while the study is served
RESULTS_TOKEN = 'results_token'   # the server's secret for the results page
REPLACED_DIR = 'replaced'        # where a rebuild moves the study it replaces
FORMAT_VERSION = 1
# 128 random bits: unguessable, and nothing in the name depends on the pair or side.
IMAGE_NAME_RE = re.compile(r'^[0-9a-f]{32}\.png$')
PAIR_ID_RE = re.compile(r'^[0-9a-f]{16}$')

Photo = tuple[str, np.ndarray]
Colorize = Callable[[np.ndarray], np.ndarray]


class StudyError(ValueError):
  """A study folder is missing, corrupt or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Pair:
  """One (real, generated) pair.

  Attributes:
    pair_id: stable id, 16 hex chars, from the seed and the photo id.
    photo_id: the caller's id of the source photo (server-side only).
    images: the two image file names (`<32 hex>.png`) in manifest order; the
      order is a seeded shuffle, so "first" does not mean "real".
    real_image: which of `images` is the real photo.
  """
  pair_id: str
  photo_id: str
  images: tuple[str, str]
  real_image: str

  @property
  def generated_image(self) -> str:
    """The file name of the colorization."""
    return self.images[1] if self.images[0] == self.real_image else self.images[0]


@dataclasses.dataclass(frozen=True)
class Study:
  """A built study, as read from its manifest.

  Attributes:
    study_dir: the study folder.
    study_id: random id of this build (ties responses.sqlite to the manifest).
    seed: the seed the pairs were picked with.
    created_at: ISO 8601 UTC time of the build.
    pairs: the pairs in manifest order.
    about: what the builder recorded of where the colorizations come from (e.g.
      the run and checkpoint step, the photos), JSON values; {} if nothing.
  """
  study_dir: pathlib.Path
  study_id: str
  seed: int
  created_at: str
  pairs: tuple[Pair, ...]
  about: dict[str, object] = dataclasses.field(default_factory=dict)

  @property
  def num_pairs(self) -> int:
    return len(self.pairs)

  @property
  def images_dir(self) -> pathlib.Path:
    return self.study_dir / IMAGES_DIR

  @property
  def db_path(self) -> pathlib.Path:
    return self.study_dir / RESPONSES_DB

  def pair(self, pair_id: str) -> Pair | None:
    """Returns the pair with this id, or None."""
    return self._by_id.get(pair_id)

  def image_names(self) -> frozenset[str]:
    """All image file names of the study."""
    return frozenset(name for p in self.pairs for name in p.images)

  @functools.cached_property
  def _by_id(self) -> dict[str, Pair]:
    return {p.pair_id: p for p in self.pairs}


def pair_id_for(photo_id: str, seed: int) -> str:
  """Stable pair id: 16 hex chars of SHA-256 over (seed, photo_id).

  Depends only on the inputs, so rebuilding a study with the same photos and
  seed gives the same ids; it carries no information about which image is real.
  """
  digest = hashlib.sha256(f'colorize_jax.turing\0{seed}\0{photo_id}'.encode())
  return digest.hexdigest()[:16]


def select_photos(num_photos: int, num_pairs: int, seed: int) -> np.ndarray:
  """Deterministically picks which photos become pairs.

  Args:
    num_photos: how many photos there are to choose from.
    num_pairs: how many to pick, 1 <= num_pairs <= num_photos.
    seed: any int.

  Returns:
    int64 [num_pairs] sorted indices into the photo sequence.
  """
  if not 1 <= num_pairs <= num_photos:
    raise ValueError(
        f'need 1 <= num_pairs <= number of photos, got num_pairs={num_pairs} '
        f'with {num_photos} photos')
  rng = np.random.default_rng([seed, 0])
  return np.sort(rng.choice(num_photos, size=num_pairs, replace=False))


def real_first_mask(num_pairs: int, seed: int) -> np.ndarray:
  """Seeded, balanced order of each pair's two images in the manifest.

  Args:
    num_pairs: number of pairs.
    seed: any int.

  Returns:
    bool [num_pairs]; True where the real image is listed first. Exactly
    num_pairs // 2 or (num_pairs + 1) // 2 entries are True.
  """
  rng = np.random.default_rng([seed, 1])
  num_true = (num_pairs + int(rng.integers(2))) // 2
  return rng.permutation(np.arange(num_pairs) < num_true)


def _check_rgb(rgb: object, what: str) -> np.ndarray:
  arr = np.asarray(rgb)
  if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3 or min(arr.shape) == 0:
    raise ValueError(
        f'{what}: expected uint8 RGB [H, W, 3], got {arr.dtype} {arr.shape}')
  return arr


def _colorize_all(photos: list[Photo], colorize: Colorize, batched: bool) -> list[np.ndarray]:
  if batched:
    shapes = {rgb.shape for _, rgb in photos}
    if len(shapes) != 1:
      raise ValueError(f'batched=True needs photos of one size, got {sorted(shapes)}')
    out = np.asarray(colorize(np.stack([rgb for _, rgb in photos])))
    if out.shape[:1] != (len(photos),):
      raise ValueError(
          f'batched colorize returned {out.shape} for {len(photos)} photos')
    outs = list(out)
  else:
    outs = [colorize(rgb) for _, rgb in photos]
  checked = []
  for (photo_id, rgb), gen in zip(photos, outs, strict=True):
    gen = _check_rgb(gen, f'colorize output for photo {photo_id!r}')
    if gen.shape != rgb.shape:
      raise ValueError(
          f'colorize output for photo {photo_id!r} has shape {gen.shape}, '
          f'the photo {rgb.shape}: real and generated images must match in size')
    checked.append(gen)
  return checked


def _write_png(rgb: np.ndarray, path: pathlib.Path) -> None:
  # No pnginfo/exif/icc: the file holds only IHDR, IDAT and IEND, identical in
  # form for real and generated images. Uncompressed, so that every image of a size
  # has the same length: compressed, a real photo's richer colours made its file
  # larger than its colorization's in 10 of 10 pairs (a Content-Length to read).
  Image.fromarray(rgb, mode='RGB').save(path, format='PNG', compress_level=0)


def _study_entries(out_dir: pathlib.Path) -> list[pathlib.Path]:
  names = [MANIFEST, IMAGES_DIR, RESPONSES_DB, RESPONSES_DB + '-wal',
           RESPONSES_DB + '-shm', RESPONSES_DB + '-journal', REPORT_DIR, RESULTS_TOKEN]
  return [out_dir / n for n in names if (out_dir / n).exists()]


def holds_study(out_dir: str | os.PathLike[str]) -> bool:
  """Whether `out_dir` holds a study's files (readable or not): building there replaces them."""
  return bool(_study_entries(pathlib.Path(out_dir)))


@contextlib.contextmanager
def serving_lock(study_dir: str | os.PathLike[str]) -> Iterator[None]:
  """Holds the study's lock: taken by the server while it serves the study, and by a
  rebuild while it replaces it, so that neither happens under the other.

  Raises:
    StudyError: another process holds it.
  """
  study_dir = pathlib.Path(study_dir)
  study_dir.mkdir(parents=True, exist_ok=True)
  try:
    with files.exclusive_lock(study_dir / SERVING_LOCK):
      yield
  except files.Busy:
    raise StudyError(f'{study_dir} is in use by another process (a running `launch.py '
                     'turing` serving it, or a rebuild); stop it first.') from None


def _set_aside(entries: Sequence[pathlib.Path], out_dir: pathlib.Path) -> None:
  """Moves a replaced study's files under out_dir/replaced/<time>/: its answers are results."""
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  target = out_dir / REPLACED_DIR / stamp
  while target.exists():
    target = target.with_name(target.name + '_')
  target.mkdir(parents=True)
  for path in entries:
    path.rename(target / path.name)


def build_study(
    photos: Sequence[Photo],
    colorize: Colorize,
    out_dir: str | os.PathLike[str],
    *,
    num_pairs: int = 20,
    seed: int = 0,
    batched: bool = False,
    overwrite: bool = False,
    about: dict[str, object] | None = None,
) -> Study:
  """Picks `num_pairs` photos, colorizes them and writes a study folder.

  Args:
    photos: sequence of (photo_id, rgb uint8 [H, W, 3]); ids must be unique
      among the picked photos. Only the picked entries are read.
    colorize: maps a photo, rgb uint8 [H, W, 3], to the model's colorization of
      its grayscale, rgb uint8 [H, W, 3] of the same shape (the callable does
      the gray conversion). With `batched=True` it maps uint8 [N, H, W, 3] to
      uint8 [N, H, W, 3] instead and is called once.
    out_dir: the study folder; created if missing. Files in it that are not
      part of a study are left alone.
    num_pairs: how many pairs, 1 <= num_pairs <= len(photos) (paper: 20).
    seed: picks the photos and the (balanced) manifest order of each pair's
      images. Same photos and seed -> same photos and pair ids.
    batched: see `colorize`.
    overwrite: replace an existing study in `out_dir`; its files, answers
      (responses.sqlite) included, are moved to out_dir/replaced/<time>/, never
      deleted. Without it an existing study raises.
    about: JSON values recorded in the manifest (`Study.about`), e.g. which run and
      step made the colorizations, so that the study says what it tested.

  Returns:
    The written study (as `load_study(out_dir)` would read it).

  Raises:
    FileExistsError: `out_dir` holds a study and `overwrite` is False.
    StudyError: the study is being served (or rebuilt) by another process.
    ValueError: bad arguments, photos or colorize outputs.
  """
  out_dir = pathlib.Path(out_dir)
  existing = _study_entries(out_dir)
  if existing and not overwrite:
    raise FileExistsError(
        f'{out_dir} already holds a study ({", ".join(p.name for p in existing)}); '
        'pass overwrite=True to replace it (its answers are moved aside, not deleted)')
  if existing:
    with serving_lock(out_dir):   # a served study: refused now, before the colorizing
      pass
  indices = select_photos(len(photos), int(num_pairs), int(seed))
  picked: list[Photo] = []
  for i in indices:
    photo_id, rgb = photos[int(i)]
    if not isinstance(photo_id, str) or not photo_id:
      raise ValueError(f'photo {int(i)}: photo_id must be a non-empty str, got {photo_id!r}')
    picked.append((photo_id, _check_rgb(rgb, f'photo {photo_id!r}')))
  ids = [photo_id for photo_id, _ in picked]
  if len(set(ids)) != len(ids):
    raise ValueError(f'duplicate photo ids among the picked photos: {sorted(ids)}')

  generated = _colorize_all(picked, colorize, batched)
  real_first = real_first_mask(len(picked), int(seed))

  out_dir.mkdir(parents=True, exist_ok=True)
  # Everything is written to a temporary folder first, so that a failure half
  # way (or with overwrite=True) never leaves a broken or half-replaced study.
  tmp = out_dir / f'.building-{secrets.token_hex(8)}'
  try:
    (tmp / IMAGES_DIR).mkdir(parents=True)
    pairs = []
    for (photo_id, rgb), gen, first in zip(picked, generated, real_first, strict=True):
      real_name = secrets.token_hex(16) + '.png'
      gen_name = secrets.token_hex(16) + '.png'
      images = (real_name, gen_name) if first else (gen_name, real_name)
      # Written in manifest order (not real-then-generated), so that the
      # order of creation says nothing either.
      for name in images:
        _write_png(rgb if name == real_name else gen, tmp / IMAGES_DIR / name)
      pairs.append(Pair(pair_id_for(photo_id, int(seed)), photo_id, images, real_name))
    created_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    stamp = datetime.datetime.fromisoformat(created_at).timestamp()
    for path in (tmp / IMAGES_DIR).iterdir():
      os.utime(path, (stamp, stamp))
    manifest = {
        'format_version': FORMAT_VERSION,
        'study_id': secrets.token_hex(16),
        'seed': int(seed),
        'created_at': created_at,
        'about': dict(about or {}),
        'pairs': [
            {'pair_id': p.pair_id, 'photo_id': p.photo_id,
             'images': list(p.images), 'real_image': p.real_image}
            for p in pairs
        ],
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + '\n')
    with serving_lock(out_dir):
      entries = _study_entries(out_dir)
      if entries:
        _set_aside(entries, out_dir)
      (tmp / IMAGES_DIR).rename(out_dir / IMAGES_DIR)
      (tmp / MANIFEST).rename(out_dir / MANIFEST)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return load_study(out_dir)


def load_study(study_dir: str | os.PathLike[str]) -> Study:
  """Reads and checks a study folder written by `build_study`.

  Args:
    study_dir: the study folder.

  Returns:
    The study.

  Raises:
    StudyError: the manifest is missing or malformed, or an image is missing.
  """
  study_dir = pathlib.Path(study_dir)
  path = study_dir / MANIFEST
  try:
    raw = json.loads(path.read_text())
  except FileNotFoundError:
    raise StudyError(f'no study in {study_dir}: {MANIFEST} is missing '
                     '(build one with `launch.py turing`, or turing.build_study)') from None
  except (OSError, ValueError) as e:
    raise StudyError(f'cannot read {path}: {e}') from None
  try:
    if raw['format_version'] != FORMAT_VERSION:
      raise StudyError(f'{path}: unsupported format_version {raw["format_version"]!r}')
    pairs = []
    for p in raw['pairs']:
      images = tuple(p['images'])
      pair = Pair(str(p['pair_id']), str(p['photo_id']), images, str(p['real_image']))
      if (len(images) != 2 or pair.real_image not in images or images[0] == images[1]
          or not all(isinstance(n, str) and IMAGE_NAME_RE.match(n) for n in images)
          or not PAIR_ID_RE.match(pair.pair_id)):
        raise StudyError(f'{path}: malformed pair {p!r}')
      pairs.append(pair)
    about = raw.get('about', {})
    if not isinstance(about, dict):
      raise StudyError(f'{path}: "about" is a {type(about).__name__}, not an object')
    study = Study(study_dir, str(raw['study_id']), int(raw['seed']),
                  str(raw['created_at']), tuple(pairs), about)
  except (KeyError, TypeError, ValueError) as e:
    if isinstance(e, StudyError):
      raise
    raise StudyError(f'{path}: malformed manifest ({type(e).__name__}: {e})') from None
  if not pairs:
    raise StudyError(f'{path}: the study has no pairs')
  if len({p.pair_id for p in pairs}) != len(pairs):
    raise StudyError(f'{path}: duplicate pair ids')
  if len(study.image_names()) != 2 * len(pairs):
    raise StudyError(f'{path}: an image name is used twice')
  missing = [n for n in sorted(study.image_names()) if not (study.images_dir / n).is_file()]
  if missing:
    raise StudyError(f'{study.images_dir}: {len(missing)} image(s) missing, e.g. {missing[0]}')
  return study
