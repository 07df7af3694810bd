"""tf.data input pipeline: colour photos in, uint8 RGB batches out.

Three sources, chosen by `config.data.source`:

* `places365_nature`: TFDS `places365_small`, outdoor-natural scenes only
  (paper sec. 3), the first `num_train` / `num_val` of them in file order.
* `folder`: any tree of image files under `config.data.folder`.
* `samples`: the colour photos that ship inside scikit-image and scikit-learn,
  so that a quickstart runs offline.

`build_splits` resolves a source once (listing, validating and filtering
files; only the validation split, if that is all a caller needs);
`train_batches` and `val_batches` then stream batches
`{'image': uint8 [local_batch, H, W, 3]}` (plus a bool `'mask'` for
validation). Colour conversion to CIELAB happens later, on the device.

Determinism: the training order of an epoch is a permutation drawn from
(seed, epoch), and every augmentation is stateless, keyed by (seed, epoch,
position in the epoch). So a run resumed at any step, or split over any number
of processes, sees bit-for-bit the batches of one uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import os
import re
from typing import Any, Iterator, Sequence

from absl import logging
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf

from colorize_jax import files
from colorize_jax import images as images_lib

SPLITS = ('train', 'val')

# Random resized crop: aspect ratios as in Inception / torchvision.
_CROP_ASPECT_RATIO = (3 / 4, 4 / 3)
_CROP_MAX_ATTEMPTS = 10

# Domain tags, so the shuffle and the augmentation streams never coincide.
_SHUFFLE_TAG = 0x5348
_AUGMENT_TAG = 0x4147

# Outdoor-natural scenes of Places365 (paper sec. 3: "Places, nature
# category"): the 49 classes whose only level-1 category in Places365's "Scene
# hierarchy" sheet (linked from github.com/CSAILVision/places365) is "outdoor,
# natural" -- its level-2 groups "water, ice, snow", "mountains, hills, desert,
# sky" and "forest, field, jungle". Classes the sheet puts under both "outdoor,
# natural" and "outdoor, man-made" (field/cultivated, hayfield, vineyard,
# rice_paddy, mountain_path, park, formal_garden, dam, ...) are left out. Five crop
# classes are in the list (corn_field, wheat_field, orchard, pasture, tree_farm);
# whether the sheet also files them under "outdoor, man-made" has not been re-checked
# (it cannot be fetched offline).
# Names as TFDS `places365_small` spells its labels ('/b/badlands' ->
# 'badlands'); `config.data.places_classes` overrides the list.
PLACES365_NATURE_CLASSES = (
    'badlands', 'bamboo_forest', 'beach', 'butte', 'canal/natural', 'canyon',
    'cliff', 'coast', 'corn_field', 'creek', 'crevasse', 'desert/sand',
    'desert/vegetation', 'field/wild', 'forest/broadleaf', 'forest_path',
    'glacier', 'grotto', 'hot_spring', 'ice_floe', 'ice_shelf', 'iceberg',
    'islet', 'lagoon', 'lake/natural', 'marsh', 'mountain', 'mountain_snowy',
    'ocean', 'orchard', 'pasture', 'pond', 'raft', 'rainforest', 'river',
    'rock_arch', 'sky', 'snowfield', 'swamp', 'swimming_hole', 'tree_farm',
    'tundra', 'underwater/ocean_deep', 'valley', 'volcano', 'waterfall',
    'watering_hole', 'wave', 'wheat_field',
)

# Colour photographs bundled in the wheels (no download). Left out: scikit-
# image's synthetic ones (colour wheel, logo, chessboard) and the right view of
# the motorcycle stereo pair (the same photo as the left one).
_SAMPLE_PHOTOS = (
    ('skimage.data', 'astronaut.png'),
    ('skimage.data', 'chelsea.png'),
    ('skimage.data', 'coffee.png'),
    ('skimage.data', 'hubble_deep_field.jpg'),
    ('skimage.data', 'ihc.png'),
    ('skimage.data', 'motorcycle_left.png'),
    ('skimage.data', 'retina.jpg'),
    ('skimage.data', 'rocket.jpg'),
    ('sklearn.datasets.images', 'china.jpg'),
    ('sklearn.datasets.images', 'flower.jpg'),
)
_SAMPLE_VAL = ('chelsea.png', 'flower.jpg')
# The samples are decoded once and kept in memory (~10 MB), since decoding
# these large PNGs for every crop would starve the training step; the two
# largest are shrunk to this short side first.
_SAMPLE_MAX_SHORT_SIDE = 512


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSet:
  """N images, addressable by index 0..N-1, held in one of three ways.

  Attributes:
    names: [N] one name per image (a path relative to the source root, or a
      source key), for logs and tests.
    paths: [N] image files, read and decoded when the pipeline runs; or None.
    blobs: [N] encoded image bytes held in memory, decoded when the pipeline
      runs; or None.
    pixels: [N] decoded rgb uint8 [h, w, 3] held in memory (for a handful of
      images whose decoding would dominate); or None.
    needs_pil: bool [N]: decode with Pillow (formats or modes that tf.io gets
      wrong or warns about: EXIF rotation, alpha, CMYK, palette, ICC profile,
      WebP, TIFF, BMP, ...); the rest (plain RGB JPEG and PNG) is decoded by
      tf.io. Unused for `pixels`.
  """
  names: tuple[str, ...]
  paths: tuple[str, ...] | None = None
  blobs: tuple[bytes, ...] | None = None
  pixels: tuple[np.ndarray, ...] | None = None
  needs_pil: np.ndarray | None = None
  _tensors: dict[str, tf.Tensor] = dataclasses.field(
      default_factory=dict, init=False, repr=False)

  def __post_init__(self):
    given = [x for x in (self.paths, self.blobs, self.pixels) if x is not None]
    if len(given) != 1:
      raise ValueError('ImageSet needs exactly one of paths, blobs, pixels.')
    if len(given[0]) != len(self.names):
      raise ValueError('ImageSet: names and images differ in length.')
    if self.needs_pil is None:
      object.__setattr__(self, 'needs_pil', np.zeros(len(self.names), bool))

  def __len__(self) -> int:
    return len(self.names)

  def subset(self, indices: Sequence[int]) -> 'ImageSet':
    """The images at `indices` (ints in 0..N-1), in that order; nothing is decoded."""
    indices = [int(i) for i in indices]
    pick = lambda xs: None if xs is None else tuple(xs[i] for i in indices)  # noqa: E731
    return ImageSet(names=pick(self.names), paths=pick(self.paths), blobs=pick(self.blobs),
                    pixels=pick(self.pixels), needs_pil=self.needs_pil[indices])

  def distinct(self) -> tuple['ImageSet', list[tuple[str, str]]]:
    """The images whose content differs from every earlier one's (byte for byte: the same
    file twice, under two names), and (dropped name, the kept name it repeats) pairs.

    Reads every file (paths), nothing is decoded.
    """
    first: dict[bytes, int] = {}
    keep, repeats = [], []
    for i in range(len(self)):
      if self.paths is not None:
        with open(self.paths[i], 'rb') as f:
          data = f.read()
      else:
        data = self.blobs[i] if self.blobs is not None else self.pixels[i].tobytes()
      digest = hashlib.sha256(data).digest()
      if digest in first:
        repeats.append((self.names[i], self.names[first[digest]]))
      else:
        first[digest] = i
        keep.append(i)
    return (self if not repeats else self.subset(keep)), repeats

  # Python that builds constants (first called while tf.data traces a map function):
  # AutoGraph's attempt to convert it warned about os.fsencode on every folder dataset.
  @tf.autograph.experimental.do_not_convert
  def tensors(self) -> dict[str, tf.Tensor]:
    """The set as eager tensors, built once.

    Returns:
      For paths / blobs: 'source' string [N], 'pil' bool [N]. For pixels:
      'flat' uint8 [sum of h*w*3], 'offset' int64 [N], 'shape' int64 [N, 2].
    """
    if self._tensors:
      return self._tensors
    # Eager even when first called while tracing a tf.data function: a traced
    # function then captures the tensors as inputs, instead of copying (up to
    # ~300 MB of) bytes into its graph as constants.
    with tf.init_scope():
      if self.pixels is not None:
        sizes = [p.size for p in self.pixels]
        self._tensors['flat'] = tf.constant(np.concatenate(
            [p.reshape(-1) for p in self.pixels] or [np.zeros(1, np.uint8)]))
        self._tensors['offset'] = tf.constant(
            np.cumsum([0] + sizes[:-1], dtype=np.int64))
        self._tensors['shape'] = tf.constant(
            np.array([p.shape[:2] for p in self.pixels], np.int64).reshape(
                -1, 2))
      else:
        # Paths as the file system's bytes: a name that is not UTF-8 is still a name.
        source = ([os.fsencode(p) for p in self.paths] if self.paths is not None
                  else self.blobs)
        self._tensors['source'] = tf.constant(
            np.array(source if source else [b''], dtype=object), tf.string)
        self._tensors['pil'] = tf.constant(
            self.needs_pil if len(self) else np.zeros(1, bool), tf.bool)
    return self._tensors


@dataclasses.dataclass(frozen=True)
class Splits:
  """What a source resolved to.

  Attributes:
    train: the training images (empty if not built).
    val: the validation images (fixed order; empty if not built).
    train_epoch_size: training examples per epoch: `num_train`, or
      `config.data.samples_per_epoch` when set (the `samples` source has ~10
      photos: an epoch then visits each many times, each time with another
      random crop).
    stats: per split, how many images were looked at and why some were
      skipped, e.g. {'train': {'files': 3110, 'kept': 3104, 'corrupt': 0,
      'grayscale': 6}, 'val': {...}} (for Places365, 'files' counts the
      nature-class examples read).
  """
  train: ImageSet
  val: ImageSet
  train_epoch_size: int
  stats: dict[str, Any]

  @property
  def num_train(self) -> int:
    return len(self.train)

  @property
  def num_val(self) -> int:
    return len(self.val)


# ----------------------------------------------------------------------------
# Decoding (shared by the build-time scan and the pipeline).


def _tf_can_decode(img: Image.Image) -> bool:
  """Whether tf.io.decode_{jpeg,png} gives the same picture as Pillow."""
  if images_lib.exif_orientation(img) != 1:
    return False
  if img.format == 'JPEG':
    return img.mode == 'RGB'
  if img.format == 'PNG':
    # libpng (in tf) logs a warning per image for some ICC profiles; neither
    # decoder applies the profile, so Pillow gives the same pixels quietly.
    return img.mode == 'RGB' and not ({'transparency', 'icc_profile'} &
                                      img.info.keys())
  return False


def _scan(sources: Sequence[str | bytes]) -> list[tuple[str, bool]]:
  """(status, needs_pil) of each encoded image (a path, or its bytes): status 'ok',
  'grayscale' or 'corrupt' (`images.check`); needs_pil says whether the pipeline must
  decode it with Pillow."""
  return [(status, status == 'corrupt' or not tf_can_decode)
          for status, tf_can_decode in images_lib.check_all(sources, inspect=_tf_can_decode)]


def _decode_tf(data: tf.Tensor, needs_pil: tf.Tensor) -> tf.Tensor:
  """Encoded bytes -> rgb uint8 [H, W, 3], in the tf.data graph."""

  def with_tf():
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3,
                                  dct_method='INTEGER_ACCURATE'),
        lambda: tf.io.decode_png(data, channels=3, dtype=tf.uint8))

  def with_pil():
    return tf.numpy_function(images_lib.load_rgb8, [data], tf.uint8, stateful=False)

  image = tf.cond(needs_pil, with_pil, with_tf)
  return tf.ensure_shape(image, [None, None, 3])


# ----------------------------------------------------------------------------
# Sources.

# A split that was not asked for.
_EMPTY = ImageSet(names=(), pixels=())


def build_splits(data_config: ml_collections.ConfigDict,
                 splits: Sequence[str] = SPLITS) -> Splits:
  """Resolves `data_config.source` into training and validation images.

  Args:
    data_config: `config.data` (experiments/default.py). Reads source,
      tfds_data_dir, folder, num_train, num_val, val_fraction and, if present,
      samples_per_epoch.
    splits: which splits to build, some of ('train', 'val'). The others are
      left empty and not read at all: `splits=('val',)` (evaluation) never
      scans or decodes a training image. A split's images do not depend on
      whether the other one is built.

  A folder with train/ and val/ subfolders uses them; any other folder is
  split by photo (`split_by_photo`). Every file is checked with Pillow once
  (a 1/8-scale decode for JPEG: ~1 ms a file).

  Returns:
    The Splits (`stats` has an entry per built split; an unbuilt training
    split has train_epoch_size 0). Corrupt and grayscale files are skipped,
    counted in `stats` and logged in one warning line.

  Raises:
    ValueError: unknown source or split, bad values, or no usable images.
    FileNotFoundError: the folder or the TFDS data is not there.
  """
  wanted = tuple(split for split in SPLITS if split in splits)
  unknown = sorted(set(splits) - set(SPLITS))
  if unknown or not wanted:
    raise ValueError(f'splits={tuple(splits)!r}: expected some of {SPLITS}.')
  source = data_config.source
  if source == 'places365_nature':
    built, stats = _places_splits(data_config, wanted)
  elif source == 'folder':
    built, stats = _folder_splits(data_config, wanted)
  elif source == 'samples':
    built, stats = _sample_splits(wanted)
  else:
    raise ValueError(
        f'config.data.source={source!r}: expected one of '
        "'places365_nature', 'folder', 'samples'.")
  samples_per_epoch = data_config.get('samples_per_epoch', None)
  if samples_per_epoch is not None and samples_per_epoch < 1:
    raise ValueError(
        f'config.data.samples_per_epoch={samples_per_epoch}: must be >= 1 '
        '(or None for one pass over the training set).')
  train = built.get('train', _EMPTY)
  return Splits(train=train, val=built.get('val', _EMPTY),
                train_epoch_size=int(samples_per_epoch or len(train))
                if 'train' in built else 0,
                stats=stats)


def _log_skips(where: str, stats: dict[str, Any],
               examples: dict[str, list[str]]) -> None:
  parts = []
  for split, s in stats.items():
    parts.append(f"{split}: {s['kept']} kept of {s['files']}, "
                 f"{s['corrupt']} corrupt, {s['grayscale']} grayscale")
  line = f'{where}: ' + '; '.join(parts)
  skipped = sum(s['corrupt'] + s['grayscale'] for s in stats.values())
  if skipped:
    for reason in ('corrupt', 'grayscale'):
      if examples[reason]:
        line += f"; {reason} e.g. {', '.join(examples[reason][:3])}"
    logging.warning('Skipped %d images. %s', skipped, line)
  else:
    logging.info('%s', line)


def _filter_scanned(names, sources, split, stats, examples):
  """Keeps the images that scan 'ok'; returns (names, sources, needs_pil)."""
  results = _scan(sources)
  kept = [i for i, (status, _) in enumerate(results) if status == 'ok']
  counts = {'files': len(results), 'kept': len(kept), 'corrupt': 0,
            'grayscale': 0}
  for name, (status, _) in zip(names, results):
    if status != 'ok':
      counts[status] += 1
      examples[status].append(name)
  stats[split] = counts
  return ([names[i] for i in kept], [sources[i] for i in kept],
          np.array([results[i][1] for i in kept], dtype=bool))


def _list_images(root: str) -> list[str]:
  """Image files under root (`images.list_images`), as sorted paths relative to root,
  leaving out what lies in training runs there (a --workdir inside a flat photo folder:
  its sample grids, read as photos, changed the split after its first epoch)."""
  found = images_lib.list_images(root)
  is_run: dict[str, bool] = {}

  def in_run(path: str) -> bool:
    """Whether a folder between root (not included) and `path` is a training run."""
    folder = os.path.dirname(path)
    while files.within(folder, root) and folder.rstrip(os.sep) != root.rstrip(os.sep):
      if folder not in is_run:
        is_run[folder] = (os.path.isfile(os.path.join(folder, _RUN_CONFIG)) and
                          os.path.isdir(os.path.join(folder, _RUN_CHECKPOINTS)))
      if is_run[folder]:
        return True
      folder = os.path.dirname(folder)
    return False

  inside = {p for p in found if in_run(p)}
  if inside:
    runs = sorted(f for f, run in is_run.items() if run)
    logging.warning('Leaving out %d images in the training run(s) %s under %r.',
                    len(inside), ', '.join(runs), root)
    found = [p for p in found if p not in inside]
  return [os.path.relpath(path, root) for path in found]


# A folder holding both is a training run (checkpoints.CONFIG_FILE, CHECKPOINT_DIR).
_RUN_CONFIG, _RUN_CHECKPOINTS = 'config.json', 'checkpoints'


# '<photo>_<crop index>': an index of one or two digits. Camera numbers ('IMG_0001',
# 'DSC_1234') and words ('beach_sunset') are part of the photo's own name.
_CROP_SUFFIX = re.compile(r'^(.+)_\d{1,2}$')


def photo_stem(relpath: str) -> str:
  """The photo a file was cut from: its path without a crop index ('_0' to '_99').

  'train/bsds_100007_1.jpg' -> 'train/bsds_100007' (shared/data/photos/SOURCES.md:
  crops of one photo share a name up to the last underscore); 'IMG_0001.JPG' and
  'beach_sunset.jpg' are photos of their own (cut at the last underscore, a camera's
  files all counted as one photo, all on one side of the split).
  """
  directory, base = os.path.split(relpath)
  name = os.path.splitext(base)[0]
  crop = _CROP_SUFFIX.match(name)
  return os.path.join(directory, crop.group(1) if crop else name)


def _stem_unit(stem: str) -> float:
  """A stable hash of a stem, uniform in [0, 1)."""
  digest = hashlib.sha256(os.fsencode(stem)).digest()   # names need not be UTF-8
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def split_by_photo(relpaths: Sequence[str],
                   val_fraction: float) -> tuple[list[str], list[str]]:
  """Splits files into (train, val) by photo, never one photo on both sides.

  A photo goes to val when the hash of its stem falls below val_fraction, so
  a photo's side depends on its name alone, not on the listing order or on
  which other files exist. Only if that leaves val empty (a tiny folder) does
  the photo with the smallest hash go to val.

  Args:
    relpaths: file paths relative to the folder.
    val_fraction: in [0, 1): the expected share of photos held out.

  Returns:
    (train, val) lists of the given paths, in the given order.
  """
  stems = {p: photo_stem(p) for p in relpaths}
  units = {s: _stem_unit(s) for s in set(stems.values())}
  val_stems = {s for s, u in units.items() if u < val_fraction}
  if not val_stems and val_fraction > 0 and len(units) >= 2:
    val_stems = {min(units, key=lambda s: (units[s], s))}
  train = [p for p in relpaths if stems[p] not in val_stems]
  val = [p for p in relpaths if stems[p] in val_stems]
  return train, val


def _folder_splits(data_config, wanted):
  root = data_config.folder
  if not root:
    raise ValueError("config.data.source='folder' needs config.data.folder.")
  root = os.path.expanduser(str(root))
  files.check_folder(root, 'The image folder (config.data.folder)')
  val_fraction = float(data_config.val_fraction)
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(
        f'config.data.val_fraction={val_fraction}: must be in [0, 1).')
  train_dir, val_dir = os.path.join(root, 'train'), os.path.join(root, 'val')
  if os.path.isdir(train_dir) and os.path.isdir(val_dir):
    train_rel = [os.path.join('train', p) for p in _list_images(train_dir)]
    val_rel = [os.path.join('val', p) for p in _list_images(val_dir)]
  else:
    train_rel, val_rel = split_by_photo(_list_images(root), val_fraction)
    if val_rel and not train_rel and 'train' in wanted:
      raise ValueError(
          f'config.data.val_fraction={val_fraction} puts all {len(val_rel)} images under '
          f'{root!r} in the validation split: lower it to leave photos for training.')
  if not train_rel and not val_rel:
    raise ValueError(
        f'No image files ({", ".join(images_lib.IMAGE_EXTENSIONS)}) under '
        f'{root!r}.')

  stats, examples = {}, {'corrupt': [], 'grayscale': []}
  sets = {}
  for split, rel in (('train', train_rel), ('val', val_rel)):
    if split not in wanted:
      continue
    names, paths, needs_pil = _filter_scanned(
        rel, [os.path.join(root, p) for p in rel], split, stats, examples)
    sets[split] = ImageSet(names=tuple(names), paths=tuple(paths),
                           needs_pil=needs_pil)
  _log_skips(f'Image folder {root!r}', stats, examples)
  if 'train' in sets and not sets['train']:
    raise ValueError(
        f'No usable colour training images under {root!r} '
        f"({stats['train']['files']} files: {stats['train']['corrupt']} "
        f"corrupt, {stats['train']['grayscale']} grayscale).")
  if 'val' in sets and not sets['val']:
    logging.warning('Image folder %r: no validation images.', root)
  return sets, stats


def _decode_sample(data: bytes) -> np.ndarray:
  """Encoded sample photo -> rgb uint8 [h, w, 3], short side <= 512."""
  rgb = images_lib.load_rgb8(data)
  scale = _SAMPLE_MAX_SHORT_SIDE / min(rgb.shape[:2])
  if scale >= 1:
    return rgb
  size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
  return np.asarray(Image.fromarray(rgb).resize(
      size, Image.Resampling.LANCZOS, reducing_gap=3.0))


def _sample_splits(wanted):
  names, blobs = [], []
  for package, filename in _SAMPLE_PHOTOS:
    try:
      blobs.append(
          importlib.resources.files(package).joinpath(filename).read_bytes())
      names.append(filename)
    except (OSError, ModuleNotFoundError) as e:
      logging.warning('Sample photo %s/%s not available: %s', package,
                      filename, e)
  if not names:
    raise FileNotFoundError(
        'No sample photos found in scikit-image / scikit-learn.')
  stats, examples = {}, {'corrupt': [], 'grayscale': []}
  sets = {}
  for split in wanted:
    pick = [i for i, n in enumerate(names) if (n in _SAMPLE_VAL) == (
        split == 'val')]
    kept_names, kept_blobs, _ = _filter_scanned(
        [names[i] for i in pick], [blobs[i] for i in pick], split, stats,
        examples)
    sets[split] = ImageSet(names=tuple(kept_names), pixels=tuple(
        _decode_sample(b) for b in kept_blobs))
  _log_skips('Sample photos', stats, examples)
  return sets, stats


def _places_gray_flags(images: tf.Tensor) -> tf.Tensor:
  """Encoded image -> whether it is grayscale (same rule as the folder scan)."""

  def decode_small():
    # DCT-domain 1/8 scale: 256 -> 32 px for the chroma test.
    return tf.io.decode_jpeg(images, channels=3, ratio=8)

  def decode_full():
    return tf.image.resize(tf.io.decode_image(
        images, channels=3, expand_animations=False),
                           [images_lib.THUMB_SIZE, images_lib.THUMB_SIZE],
                           method='area')

  small = tf.cond(tf.io.is_jpeg(images), lambda: tf.cast(
      decode_small(), tf.float32), decode_full)
  spread = tf.reduce_max(small, axis=-1) - tf.reduce_min(small, axis=-1)
  return tf.reduce_mean(spread) < images_lib.GRAY_TOLERANCE


def _places_take(split: str, count: int, data_dir: str | None,
                 class_names: Sequence[str]) -> tuple[list[bytes], dict]:
  """The first `count` colour images of the given classes, in file order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder('places365_small', data_dir=data_dir)
  label_names = builder.info.features['label'].names
  unknown = sorted(set(class_names) - set(label_names))
  if unknown:
    raise ValueError(f'Not places365_small labels: {unknown}.')
  keep = np.zeros(len(label_names), bool)
  keep[[label_names.index(n) for n in class_names]] = True
  keep = tf.constant(keep)
  try:
    ds = tfds.load(
        'places365_small', split=split, data_dir=data_dir, download=False,
        shuffle_files=False,
        # Encoded bytes: the label filter runs before any decoding, and only
        # nature images are then decoded, at 1/8 scale, for the gray test.
        decoders={'image': tfds.decode.SkipDecoding()},
        # One file at a time: "the first N" is then the files' own order,
        # whatever TFDS's interleave defaults are. TFDS shuffled the records
        # when it wrote them, so the first N mix all classes.
        read_config=tfds.ReadConfig(interleave_cycle_length=1))
  except AssertionError as e:  # TFDS's "could not find data" is an assert.
    raise FileNotFoundError(
        f'places365_small is not prepared in data_dir={data_dir!r} '
        '(config.data.tfds_data_dir). Prepare it once with `tfds build '
        'places365_small --data_dir=...` (about 30 GB download).') from e
  ds = ds.filter(lambda ex: tf.gather(keep, ex['label']))
  ds = ds.map(lambda ex: (ex['image'], _places_gray_flags(ex['image'])),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  blobs, gray, seen = [], 0, 0
  for image, is_gray in ds.as_numpy_iterator():
    seen += 1
    if is_gray:
      gray += 1
    else:
      blobs.append(image)
      if len(blobs) == count:
        break
  if len(blobs) < count:
    raise ValueError(
        f'places365_small {split!r} has only {len(blobs)} colour images of '
        f'the {len(class_names)} nature classes; config asks for {count}.')
  return blobs, {'files': seen, 'kept': len(blobs), 'corrupt': 0,
                 'grayscale': gray}


def _places_splits(data_config, wanted):
  num_train, num_val = int(data_config.num_train), int(data_config.num_val)
  if num_train < 1 or num_val < 0:
    raise ValueError(f'config.data.num_train={num_train} must be >= 1 and '
                     f'num_val={num_val} >= 0.')
  classes = data_config.get('places_classes', None)
  if classes is None:
    classes = PLACES365_NATURE_CLASSES
  elif not classes:   # an empty list asks for no images, not for the default ones
    raise ValueError('config.data.places_classes is empty: name the scene classes to train '
                     'on, or leave it None for the nature classes.')
  data_dir = data_config.tfds_data_dir
  stats, sets = {}, {}
  for split, tfds_split, count in (('train', 'train', num_train),
                                   ('val', 'validation', num_val)):
    if split not in wanted:
      continue
    blobs, stats[split] = (
        _places_take(tfds_split, count, data_dir, classes) if count else
        ([], {'files': 0, 'kept': 0, 'corrupt': 0, 'grayscale': 0}))
    sets[split] = ImageSet(
        names=tuple(f'places365_small/{tfds_split}/{i}'
                    for i in range(len(blobs))),
        blobs=tuple(blobs))
  _log_skips('places365_small nature', stats,
             {'corrupt': [], 'grayscale': []})
  return sets, stats


# ----------------------------------------------------------------------------
# Pipeline.


def steps_per_epoch(splits: Splits, global_batch_size: int) -> int:
  """Training steps per epoch: full global batches (the remainder is dropped)."""
  return splits.train_epoch_size // global_batch_size


def num_val_batches(splits: Splits, global_batch_size: int) -> int:
  """Validation batches: every image once, the last batch padded."""
  return -(-splits.num_val // global_batch_size)


def _local_batch_size(global_batch_size: int, process_index: int,
                      process_count: int, image_size: int) -> int:
  """Checks the arguments that train and val batches share; returns B/n."""
  if image_size < 1:
    raise ValueError(f'image_size={image_size}: must be >= 1.')
  if global_batch_size < 1:
    raise ValueError(f'global_batch_size={global_batch_size}: must be >= 1.')
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in '
                     f'[0, process_count={process_count}).')
  if global_batch_size % process_count:
    raise ValueError(
        f'Global batch size {global_batch_size} does not divide by the '
        f'process count {process_count}.')
  return global_batch_size // process_count


def _epoch_order(num_images: int, epoch_size: int, seed: int,
                 epoch: int) -> np.ndarray:
  """Image index for each position of an epoch: int64 [epoch_size].

  Back-to-back permutations drawn from (seed, epoch): every image once per
  pass, a fresh order each epoch.
  """
  rng = np.random.default_rng(
      np.random.SeedSequence([_SHUFFLE_TAG, seed % 2**64, epoch]))
  passes = -(-epoch_size // num_images)
  return np.concatenate([rng.permutation(num_images)
                         for _ in range(passes)])[:epoch_size]


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  # Parallelism across examples (map) rather than inside ops: fewer threads
  # fighting over few cores.
  options.threading.max_intra_op_parallelism = 1
  return options


def _load(images: ImageSet, index: tf.Tensor) -> tf.Tensor:
  """Image `index` of the set -> rgb uint8 [h, w, 3]."""
  t = images.tensors()
  if images.pixels is not None:
    shape = tf.gather(t['shape'], index)
    size = shape[0] * shape[1] * 3
    flat = tf.slice(t['flat'], [tf.gather(t['offset'], index)], [size])
    return tf.reshape(flat, tf.concat([shape, [3]], 0))
  data = tf.gather(t['source'], index)
  if images.paths is not None:
    data = tf.io.read_file(data)
  return _decode_tf(data, tf.gather(t['pil'], index))


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """rgb uint8 [h, w, 3] -> uint8 [size, size, 3], antialiased bilinear."""

  def resize(antialias):
    out = tf.image.resize(image, [size, size], method='bilinear',
                          antialias=antialias)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  shape = tf.shape(image)
  same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
  # Antialiasing only matters when shrinking; when enlarging its kernel is
  # plain bilinear (equal to 0.004 levels) and 4x slower.
  shrink = tf.logical_or(shape[0] > size, shape[1] > size)
  out = tf.cond(same, lambda: image,
                lambda: tf.cond(shrink, lambda: resize(True),
                                lambda: resize(False)))
  return tf.ensure_shape(out, [size, size, 3])


def _center_square(image: tf.Tensor) -> tf.Tensor:
  """The largest centred square; resizing it equals "short side, then crop"."""
  shape = tf.shape(image)
  side = tf.minimum(shape[0], shape[1])
  top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
  return image[top:top + side, left:left + side]


def _random_resized_crop(image: tf.Tensor, key: tf.Tensor,
                         scale: tuple[float, float]) -> tf.Tensor:
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=key,
      min_object_covered=0.0,
      aspect_ratio_range=_CROP_ASPECT_RATIO,
      area_range=scale,
      max_attempts=_CROP_MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return tf.slice(image, begin, size)


def crop_scale(data_config: ml_collections.ConfigDict) -> tuple[float, float]:
  """config.data.crop_scale as (lo, hi): the area range of random resized crops.

  Raises:
    ValueError: not two numbers with 0 < lo <= hi <= 1 (checked whether or not
      random_resized_crop is on, so that a bad value never waits for it to be).
  """
  value = data_config.crop_scale
  try:
    lo, hi = (float(s) for s in value)
  except (TypeError, ValueError):
    raise ValueError(f'config.data.crop_scale={value!r}: need two numbers (lo, hi), '
                     'e.g. (0.5, 1.0).') from None
  if not 0 < lo <= hi <= 1:
    raise ValueError(f'config.data.crop_scale={(lo, hi)}: need 0 < lo <= hi <= 1.')
  return lo, hi


def train_batches(splits: Splits, data_config: ml_collections.ConfigDict, *,
                  image_size: int, global_batch_size: int, seed: int,
                  epoch: int, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One epoch of training batches, from `start_step` on.

  Every process applies the same global order; process p of n takes rows
  [p*B/n, (p+1)*B/n) of each global batch of B. Skipped steps are skipped
  on the index level: nothing before `start_step` is read or decoded.

  Args:
    splits: from `build_splits`.
    data_config: `config.data`; reads random_resized_crop, crop_scale, flip,
      prefetch.
    image_size: output side S.
    global_batch_size: B over all processes; must divide by process_count.
    seed: the run's seed; with `epoch` it fixes order and augmentations.
    epoch: 0-based epoch number.
    start_step: first step of the epoch to yield (for a resumed run).
    process_index: this process (jax.process_index()).
    process_count: all processes (jax.process_count()).

  Yields:
    {'image': rgb uint8 [B/n, S, S, 3]}, steps_per_epoch - start_step times.
  """
  local = _local_batch_size(global_batch_size, process_index, process_count,
                            image_size)
  steps = steps_per_epoch(splits, global_batch_size)
  if steps < 1:
    raise ValueError(
        f'An epoch of {splits.train_epoch_size} training images is less '
        f'than one global batch of {global_batch_size}: lower the batch size '
        'or raise config.data.samples_per_epoch.')
  if not 0 <= start_step <= steps:
    raise ValueError(f'start_step={start_step} is not in [0, {steps}].')
  scale = crop_scale(data_config)

  order = _epoch_order(splits.num_train, steps * global_batch_size, seed,
                       epoch)
  positions = np.arange(steps * global_batch_size).reshape(
      steps, global_batch_size)
  positions = positions[start_step:, process_index * local:
                        (process_index + 1) * local].reshape(-1)
  # Augmentation key per example: (hash of seed and epoch, position in the
  # epoch), so it is the same whichever process or resumed run draws it.
  base = np.random.SeedSequence(
      [_AUGMENT_TAG, seed % 2**64, epoch]).generate_state(1, np.uint64)[0]
  keys = np.stack([np.full(len(positions), base).view(np.int64), positions],
                  axis=1).astype(np.int64)

  images = splits.train
  rrc, flip = bool(data_config.random_resized_crop), bool(data_config.flip)

  def example(index, key):
    image = _load(images, index)
    crop_key, flip_key = tf.unstack(tf.random.split(key, 2))
    if rrc:
      image = _random_resized_crop(image, crop_key, scale)
    else:
      image = _center_square(image)
    image = _resize(image, image_size)
    if flip:
      image = tf.cond(
          tf.random.stateless_uniform([], seed=flip_key) < 0.5,
          lambda: tf.reverse(image, axis=[1]), lambda: image)
    return {'image': image}

  ds = tf.data.Dataset.from_tensor_slices((order[positions], keys))
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(local, drop_remainder=True)
  ds = ds.prefetch(int(data_config.get('prefetch', 2)))
  return _clear_read_errors(ds.with_options(_options()).as_numpy_iterator())


class DataReadError(RuntimeError):
  """An image that was readable when the run started cannot be read any more."""


def _clear_read_errors(batches: Iterator[Any], split: str = 'training') -> Iterator[Any]:
  """`batches`, with TensorFlow's errors from reading the images as a `DataReadError`."""
  try:
    yield from batches
  except tf.errors.OpError as e:
    first_line = (e.message.strip().splitlines() or [''])[0][:300]
    raise DataReadError(
        f'Reading the {split} images failed ({type(e).__name__}: {first_line}). Were files '
        'of the dataset changed or damaged after the run started? Restore them (or start a '
        'new run), then run the same command to resume from the last checkpoint.') from e


def val_batches(splits: Splits, *, image_size: int, global_batch_size: int,
                process_index: int = 0,
                process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Validation batches: fixed order, no augmentation, every image once.

  Each image is resized (short side to S, antialiased) and centre-cropped.
  The last global batch is padded with zero images; `mask` marks real rows.
  Process p of n takes rows [p*B/n, (p+1)*B/n) of each global batch.

  Args:
    splits: from `build_splits`.
    image_size: output side S.
    global_batch_size: B over all processes; must divide by process_count.
    process_index: this process.
    process_count: all processes.

  Yields:
    {'image': rgb uint8 [B/n, S, S, 3], 'mask': bool [B/n]},
    num_val_batches(splits, B) times.
  """
  local = _local_batch_size(global_batch_size, process_index, process_count,
                            image_size)
  batches = num_val_batches(splits, global_batch_size)
  if not batches:
    return iter(())
  positions = np.arange(batches * global_batch_size).reshape(
      batches, global_batch_size)
  positions = positions[:, process_index * local:
                        (process_index + 1) * local].reshape(-1)
  valid = positions < splits.num_val
  images = splits.val

  def example(index, is_real):
    image = tf.cond(
        is_real,
        lambda: _resize(_center_square(_load(images, index)), image_size),
        lambda: tf.zeros([image_size, image_size, 3], tf.uint8))
    return {'image': image, 'mask': is_real}

  ds = tf.data.Dataset.from_tensor_slices(
      (np.where(valid, positions, 0).astype(np.int64), valid))
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(local, drop_remainder=True).prefetch(2)
  return _clear_read_errors(ds.with_options(_options()).as_numpy_iterator(), 'validation')
