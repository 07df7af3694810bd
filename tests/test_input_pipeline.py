"""Tests of the tf.data input pipeline: sources, decoding, order, resume, sharding."""

import functools
import io
import logging
import os
import re

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from colorize_jax import images as images_lib
from colorize_jax import input_pipeline as ip

SIZE = 16  # side of the test images; pipeline runs at SIZE keep pixels exact


def _data_config(**overrides) -> ml_collections.ConfigDict:
  """config.data as experiments/default.py has it, with overrides."""
  config = ml_collections.ConfigDict(dict(
      source='folder', tfds_data_dir=None, folder=None, num_train=15_000,
      num_val=3_000, val_fraction=0.1, random_resized_crop=False,
      crop_scale=(0.5, 1.0), flip=False, shuffle_buffer=16_384, prefetch=2,
      samples_per_epoch=None))
  config.update(overrides)
  return config


def _noise(seed, h=SIZE, w=SIZE):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _smooth(h=32, w=32):
  """A smooth colour gradient (JPEG keeps it within a few levels)."""
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([x * 255 // (w - 1), y * 255 // (h - 1),
                   np.full_like(x, 128)], -1).astype(np.uint8)


def _jpeg_bytes(rgb, quality=95, **kwargs):
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, 'JPEG', quality=quality, **kwargs)
  return buf.getvalue()


def _write_noise_pngs(directory, names, seed0):
  os.makedirs(directory, exist_ok=True)
  images = {}
  for i, name in enumerate(names):
    images[name] = _noise(seed0 + i)
    Image.fromarray(images[name]).save(os.path.join(directory, name))
  return images


def _collect(iterator):
  return [dict(batch) for batch in iterator]


def _which(image, sources):
  """Index of the source image equal to `image` (exactly), or -1."""
  for i, src in enumerate(sources):
    if np.array_equal(image, src):
      return i
  return -1


# ---------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope='module')
def noise_folder(tmp_path_factory):
  """train/ with 10 and val/ with 7 distinct noise PNGs of SIZE x SIZE."""
  root = tmp_path_factory.mktemp('noise')
  train = _write_noise_pngs(root / 'train', [f'n{i:02d}.png' for i in range(10)],
                            100)
  val = _write_noise_pngs(root / 'val', [f'v{i:02d}.png' for i in range(7)], 200)
  splits = ip.build_splits(_data_config(folder=str(root)))
  return dict(root=str(root), splits=splits,
              train=[train[os.path.basename(n)] for n in splits.train.names],
              val=[val[os.path.basename(n)] for n in splits.val.names])


@pytest.fixture(scope='module')
def odd_folder(tmp_path_factory):
  """Odd formats in val/ (with the picture each must decode to), bad files in train/."""
  root = tmp_path_factory.mktemp('odd')
  train, val = root / 'train', root / 'val'
  train.mkdir()
  val.mkdir()
  expected = {}
  n = 32

  colour = _noise(1, n, n)
  Image.fromarray(colour).save(train / 'good.png')
  jpeg = _jpeg_bytes(_smooth())
  (train / 'good.jpg').write_bytes(jpeg)
  # Bad: random bytes, a truncated JPEG, an empty file.
  (train / 'random.jpg').write_bytes(np.random.default_rng(0).bytes(3000))
  (train / 'truncated.jpg').write_bytes(_jpeg_bytes(_noise(2, 64, 64))[:1500])
  (train / 'empty.png').write_bytes(b'')
  (train / 'notes.txt').write_text('not an image')
  # Gray: an L JPEG, an RGB JPEG of a gray picture (JPEG adds a little chroma
  # noise), an RGB PNG with equal channels, a 16-bit gray PNG.
  Image.fromarray(_smooth()[..., 0]).save(train / 'gray_l.jpg')
  (train / 'gray_rgb.jpg').write_bytes(
      _jpeg_bytes(np.repeat(_noise(6, n, n)[..., :1], 3, axis=-1), quality=75))
  gray = np.repeat(_noise(3, n, n)[..., :1], 3, axis=-1)
  Image.fromarray(gray).save(train / 'gray_rgb.png')
  Image.fromarray((np.arange(n * n).reshape(n, n) * 60).astype(np.uint16)
                  ).save(train / 'gray16.png')

  # RGBA: left half transparent (red underneath), right half opaque noise.
  rgba = np.concatenate([colour, np.full((n, n, 1), 255, np.uint8)], -1)
  rgba[:, : n // 2, :3] = (255, 0, 0)
  rgba[:, : n // 2, 3] = 0
  Image.fromarray(rgba, 'RGBA').save(val / 'rgba.png')
  want = colour.copy()
  want[:, : n // 2] = 255
  expected['rgba.png'] = (want, 0)
  # 16-bit colour PNG: the 8-bit value is the high byte.
  rgb16 = np.random.default_rng(4).integers(0, 65536, (n, n, 3), np.uint16)
  (val / 'rgb16.png').write_bytes(tf.io.encode_png(rgb16).numpy())
  expected['rgb16.png'] = ((rgb16 >> 8).astype(np.uint8), 1)
  # CMYK JPEG of a smooth picture.
  Image.fromarray(_smooth()).convert('CMYK').save(val / 'cmyk.jpg', quality=95)
  expected['cmyk.jpg'] = (_smooth(), 6)
  # Palette PNG.
  palette = Image.fromarray(_noise(5, n, n)).quantize(16)
  palette.save(val / 'palette.png')
  expected['palette.png'] = (np.asarray(palette.convert('RGB')), 0)
  # EXIF orientation 6: display = stored turned 90 degrees clockwise, so the
  # stored top half (red) shows as the right half.
  stored = np.zeros((n, n, 3), np.uint8)
  stored[: n // 2] = (255, 0, 0)
  stored[n // 2:] = (0, 0, 255)
  exif = Image.Exif()
  exif[0x0112] = 6
  (val / 'exif6.jpg').write_bytes(_jpeg_bytes(stored, exif=exif.tobytes()))
  want = np.zeros((n, n, 3), np.uint8)
  want[:, n // 2:] = (255, 0, 0)
  want[:, : n // 2] = (0, 0, 255)
  expected['exif6.jpg'] = (want, 8)
  # Lossless WebP, BMP, TIFF.
  for i, (name, kwargs) in enumerate([('lossless.webp', dict(lossless=True)),
                                      ('plain.bmp', {}), ('plain.tif', {})]):
    img = _noise(10 + i, n, n)
    Image.fromarray(img).save(val / name, **kwargs)
    expected[name] = (img, 0)
  # Plain JPEG: tf decodes it, and agrees with Pillow.
  (val / 'plain.jpg').write_bytes(jpeg)
  expected['plain.jpg'] = (np.asarray(Image.open(io.BytesIO(jpeg))), 2)
  return dict(root=str(root), expected=expected)


# ---------------------------------------------------------------------------
# Folder source.


def test_folder_skips_and_counts_bad_and_gray_files(odd_folder, caplog):
  """Corrupt files and grayscale images are skipped and counted with one warning, not raised."""
  with caplog.at_level(logging.WARNING):
    splits = ip.build_splits(_data_config(folder=odd_folder['root']))
  assert splits.stats['train'] == dict(files=9, kept=2, corrupt=3, grayscale=4)
  assert sorted(splits.train.names) == ['train/good.jpg', 'train/good.png']
  assert splits.stats['val']['kept'] == len(odd_folder['expected'])
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and 'Skipped' in r.getMessage()]
  assert len(warnings) == 1
  assert '3 corrupt' in warnings[0] and '4 grayscale' in warnings[0]
  assert 'random.jpg' in warnings[0] or 'truncated.jpg' in warnings[0]


def test_folder_decodes_odd_formats_as_displayed(odd_folder):
  """RGBA (over white), 16-bit, CMYK, palette, EXIF-rotated, WebP, BMP, TIFF: the shown picture."""
  splits = ip.build_splits(_data_config(folder=odd_folder['root']))
  batch = next(ip.val_batches(splits, image_size=32,
                              global_batch_size=splits.num_val))
  assert batch['mask'].all()
  for name, image in zip(splits.val.names, batch['image']):
    want, tolerance = odd_folder['expected'][os.path.basename(name)]
    error = np.abs(image.astype(int) - want.astype(int)).mean()
    assert error <= tolerance, (name, error)


def test_validation_split_alone_never_reads_training_files(odd_folder, tmp_path,
                                                          monkeypatch):
  """splits=('val',) gives the same validation images and counts as a full build, without scanning
  a training file (so broken training data does not stop an evaluation)."""
  config = _data_config(folder=odd_folder['root'])
  both = ip.build_splits(config)
  scanned = []
  scan = ip._scan
  monkeypatch.setattr(ip, '_scan', lambda sources: scanned.extend(sources) or scan(sources))
  val = ip.build_splits(config, splits=('val',))
  assert len(scanned) == both.stats['val']['files']
  assert not [s for s in scanned if os.sep + 'train' + os.sep in s]
  assert val.val.names == both.val.names and list(val.val.needs_pil) == list(both.val.needs_pil)
  assert val.stats == {'val': both.stats['val']}
  assert val.num_train == 0 and val.train_epoch_size == 0

  _write_noise_pngs(tmp_path / 'val', ['v.png'], 500)
  (tmp_path / 'train').mkdir()
  (tmp_path / 'train' / 'broken.jpg').write_bytes(b'not a jpeg')
  broken = _data_config(folder=str(tmp_path))
  with pytest.raises(ValueError, match='training images'):
    ip.build_splits(broken)
  assert ip.build_splits(broken, splits=('val',)).val.names == ('val/v.png',)
  with pytest.raises(ValueError, match='splits'):
    ip.build_splits(broken, splits=('test',))
  samples = ip.build_splits(_data_config(source='samples'), splits=('val',))
  assert samples.num_val == 2 and samples.num_train == 0 and set(samples.stats) == {'val'}


def test_folder_split_by_photo_keeps_crops_together(tmp_path):
  """Without train/ and val/, crops of one photo (same stem) never land on both sides."""
  for stem in range(30):
    for crop in range(1 + stem % 3):
      Image.fromarray(_noise(stem * 10 + crop, 8, 8)).save(
          tmp_path / f'src_{stem}_{crop}.png')
  Image.fromarray(_noise(999, 8, 8)).save(tmp_path / 'nounderscore.png')
  splits = ip.build_splits(_data_config(folder=str(tmp_path), val_fraction=0.3))
  train_stems = {ip.photo_stem(n) for n in splits.train.names}
  val_stems = {ip.photo_stem(n) for n in splits.val.names}
  assert train_stems and val_stems and not train_stems & val_stems
  assert splits.num_train + splits.num_val == 61


def test_a_training_run_inside_the_photo_folder_is_not_read_as_photos(tmp_path):
  """A --workdir inside a flat photo folder: its sample grids are no training photos, so the
  split after an epoch is the split before it (it took them in and every resume was refused
  as 'steps per epoch changed'); a folder that merely has a config.json is read."""
  for i in range(12):
    Image.fromarray(_noise(i, 8, 8)).save(tmp_path / f'photo{i}.png')
  config = _data_config(folder=str(tmp_path), val_fraction=0.3)
  before = ip.build_splits(config)
  run = tmp_path / 'run'
  (run / 'checkpoints').mkdir(parents=True)
  (run / 'config.json').write_text('{}')
  (run / 'samples').mkdir()
  for i in range(3):
    Image.fromarray(_noise(100 + i, 8, 8)).save(run / 'samples' / f'epoch_00{i}.png')
  # Links looping back up are listed once (a second walk looking for runs followed them
  # for ever).
  os.symlink('..', run / 'samples' / 'up')
  os.symlink('..', run / 'samples' / 'up2')
  after = ip.build_splits(config)
  assert (after.train.names, after.val.names) == (before.train.names, before.val.names)
  (run / 'checkpoints').rmdir()   # not a run: its images are photos like any others
  splits = ip.build_splits(config)
  assert splits.num_train + splits.num_val == 15


def test_split_by_photo_ignores_listing_order_and_file_count():
  """A photo's side depends on its name only: shuffling or dropping other files keeps it."""
  files = [f'a/photo{s}_{c}.jpg' for s in range(200) for c in range(3)]
  train, val = ip.split_by_photo(files, 0.25)
  side = {ip.photo_stem(f): f in val for f in files}
  assert 20 < len({ip.photo_stem(f) for f in val}) < 80
  rng = np.random.default_rng(0)
  subset = [files[i] for i in rng.permutation(len(files))[:150]]
  train2, val2 = ip.split_by_photo(subset, 0.25)
  assert val2 and train2
  assert all(side[ip.photo_stem(f)] == (f in val2) for f in subset)


def test_an_image_damaged_after_the_start_is_a_clear_data_error(tmp_path):
  """A photo that was readable when the splits were built and is garbage by the time an
  epoch reads it raises DataReadError saying what happened, not TensorFlow's error."""
  root = tmp_path
  for split, count in (('train', 4), ('val', 1)):
    (root / split).mkdir()
    for i in range(count):
      images_lib.save_png(_noise(i), root / split / f'p{i}.png')
  config = _data_config(folder=str(root))
  splits = ip.build_splits(config)
  for path in (root / 'train').iterdir():
    path.write_bytes(b'no longer a photo')
  with pytest.raises(ip.DataReadError, match='changed or damaged after the run started'):
    list(ip.train_batches(splits, config, image_size=16, global_batch_size=2, seed=0, epoch=0))


def test_empty_folder_and_wrong_path_are_clear_errors(tmp_path):
  """An empty folder, a missing folder or only unusable files raise with the path in the message."""
  with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
    ip.build_splits(_data_config(folder=str(tmp_path)))
  missing = str(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    ip.build_splits(_data_config(folder=missing))
  (tmp_path / 'bad.jpg').write_bytes(b'not a jpeg')
  with pytest.raises(ValueError, match='is a file'):   # not "not found": it is there
    ip.build_splits(_data_config(folder=str(tmp_path / 'bad.jpg')))
  with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
    ip.build_splits(_data_config(folder=str(tmp_path)))
  with pytest.raises(ValueError, match='source'):
    ip.build_splits(_data_config(source='imagenet'))


# ---------------------------------------------------------------------------
# Training order, augmentation, resume, sharding.


def _train(splits, *, epoch=0, seed=0, batch=4, **kwargs):
  config = _data_config(**{k: v for k, v in kwargs.items()
                           if k in ('random_resized_crop', 'flip',
                                    'crop_scale')})
  extra = {k: v for k, v in kwargs.items()
           if k in ('start_step', 'process_index', 'process_count')}
  return _collect(ip.train_batches(splits, config, image_size=SIZE,
                                   global_batch_size=batch, seed=seed,
                                   epoch=epoch, **extra))


def _order(batches, sources):
  return [_which(img, sources) for b in batches for img in b['image']]


def test_epoch_order_is_reshuffled_per_epoch_and_reproducible(noise_folder):
  """Each epoch is a new permutation; the same (seed, epoch) gives the same batches."""
  splits, sources = noise_folder['splits'], noise_folder['train']
  assert ip.steps_per_epoch(splits, 4) == 2
  e0 = _order(_train(splits, epoch=0), sources)
  assert len(e0) == 8 and len(set(e0)) == 8 and -1 not in e0
  assert _order(_train(splits, epoch=0), sources) == e0
  assert _order(_train(splits, epoch=1), sources) != e0
  assert _order(_train(splits, epoch=0, seed=1), sources) != e0


def test_augmentations_crop_and_flip(noise_folder):
  """Without augmentation images come out unchanged; flip mirrors some; random crops change all."""
  splits, sources = noise_folder['splits'], noise_folder['train']
  assert -1 not in _order(_train(splits), sources)
  out = _train(splits, flip=True)
  flipped = _order(out, [s[:, ::-1] for s in sources])
  plain = _order(out, sources)
  assert all((f >= 0) != (p >= 0) for f, p in zip(flipped, plain))
  assert 0 < sum(f >= 0 for f in flipped) < len(flipped)
  cropped = _order(_train(splits, random_resized_crop=True, crop_scale=(0.3, 0.6)),
                   sources)
  assert cropped.count(-1) == len(cropped)


def test_resumed_iterator_equals_tail_of_uninterrupted_one(noise_folder):
  """Starting an epoch at step k yields bit-for-bit the batches k.. of a full run."""
  splits = ip.Splits(train=noise_folder['splits'].train,
                     val=noise_folder['splits'].val, train_epoch_size=24,
                     stats={})
  full = _train(splits, epoch=3, random_resized_crop=True, flip=True)
  assert len(full) == 6
  resumed = _train(splits, epoch=3, random_resized_crop=True, flip=True,
                   start_step=4)
  assert len(resumed) == 2
  for a, b in zip(resumed, full[4:]):
    np.testing.assert_array_equal(a['image'], b['image'])
  assert _train(splits, epoch=3, start_step=6) == []


def test_resume_does_not_read_the_skipped_images(tmp_path):
  """A resumed epoch never reads the images of the steps it skips (they may be unreadable)."""
  images = _write_noise_pngs(tmp_path / 'train', [f't{i}.png' for i in range(8)], 300)
  _write_noise_pngs(tmp_path / 'val', ['v.png'], 400)
  splits = ip.build_splits(_data_config(folder=str(tmp_path)))
  sources = [images[os.path.basename(n)] for n in splits.train.names]
  full = _train(splits, batch=2)
  order = _order(full, sources)
  assert len(order) == 8 and -1 not in order
  for i in order[:4]:  # images of steps 0 and 1 only
    (tmp_path / splits.train.names[i]).write_bytes(b'gone')
  resumed = _train(splits, batch=2, start_step=2)
  assert len(resumed) == 2
  for a, b in zip(resumed, full[2:]):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_processes_split_each_global_batch(noise_folder):
  """Process p of n gets rows [p*B/n, (p+1)*B/n) of every global batch of one process."""
  splits = ip.Splits(train=noise_folder['splits'].train,
                     val=noise_folder['splits'].val, train_epoch_size=16,
                     stats={})
  kwargs = dict(epoch=1, random_resized_crop=True, flip=True)
  whole = _train(splits, **kwargs)
  parts = [_train(splits, process_index=p, process_count=2, **kwargs)
           for p in range(2)]
  assert len(whole) == len(parts[0]) == len(parts[1]) == 4
  for step, batch in enumerate(whole):
    assert parts[0][step]['image'].shape == (2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(
        np.concatenate([parts[0][step]['image'], parts[1][step]['image']]),
        batch['image'])
  with pytest.raises(ValueError, match='divide'):
    _train(splits, batch=3, process_count=2)


def test_epoch_shorter_than_a_batch_is_a_clear_error(noise_folder):
  """An epoch with fewer images than one global batch raises, naming samples_per_epoch."""
  with pytest.raises(ValueError, match='samples_per_epoch'):
    _train(noise_folder['splits'], batch=16)


def test_validation_covers_every_image_once_with_mask(noise_folder):
  """Validation yields each image exactly once over all processes; padding rows are masked zeros."""
  splits, sources = noise_folder['splits'], noise_folder['val']
  assert ip.num_val_batches(splits, 4) == 2
  seen = []
  for p in range(2):
    batches = _collect(ip.val_batches(splits, image_size=SIZE,
                                      global_batch_size=4, process_index=p,
                                      process_count=2))
    assert len(batches) == 2
    for b in batches:
      assert b['image'].shape == (2, SIZE, SIZE, 3) and b['mask'].dtype == bool
      seen += [_which(img, sources) for img in b['image'][b['mask']]]
      assert not b['image'][~b['mask']].any()
  assert sorted(seen) == list(range(7))


def test_validation_resizes_short_side_and_centre_crops(tmp_path):
  """A non-square image comes out as the centred square, resized to the output size."""
  wide = _noise(7, 8, 24)
  (tmp_path / 'train').mkdir()
  (tmp_path / 'val').mkdir()
  Image.fromarray(_noise(8)).save(tmp_path / 'train' / 'a.png')
  Image.fromarray(wide).save(tmp_path / 'val' / 'wide.png')
  splits = ip.build_splits(_data_config(folder=str(tmp_path)))
  out = next(ip.val_batches(splits, image_size=8, global_batch_size=1))
  np.testing.assert_array_equal(out['image'][0], wide[:, 8:16])
  out = next(ip.val_batches(splits, image_size=4, global_batch_size=1))
  assert out['image'].shape == (1, 4, 4, 3)


# ---------------------------------------------------------------------------
# Samples and Places365 sources.


def test_samples_source_works_offline():
  """The packaged photos give colour train and val sets and a training batch, without network."""
  splits = ip.build_splits(_data_config(source='samples', samples_per_epoch=4))
  assert splits.num_val == 2 and splits.num_train >= 6
  assert splits.stats['train']['corrupt'] == 0
  assert ip.steps_per_epoch(splits, 4) == 1
  config = _data_config(random_resized_crop=True, flip=True)
  batch = next(ip.train_batches(splits, config, image_size=32,
                                global_batch_size=4, seed=0, epoch=0))
  assert batch['image'].shape == (4, 32, 32, 3) and batch['image'].dtype == np.uint8
  assert all(images_lib.chroma_spread(img) > images_lib.GRAY_TOLERANCE
             for img in batch['image'])


def test_places_nature_classes_are_places365_small_labels():
  """Every nature class is a places365_small label name (no typos, no duplicates)."""
  names = _places_label_names()
  assert len(set(ip.PLACES365_NATURE_CLASSES)) == len(ip.PLACES365_NATURE_CLASSES)
  assert set(ip.PLACES365_NATURE_CLASSES) <= set(names)


@functools.cache
def _places_label_names():
  # Read outside mock_data: inside it TFDS hides the real file system.
  return tfds.builder('places365_small').info.features['label'].names


def _fake_places(split, n=120):
  """(jpeg bytes, label, is_gray) per example of a fake places365_small split.

  Labels are drawn half from the nature classes so that the filter has work on
  both sides; every 5th image is gray.
  """
  names = _places_label_names()
  nature = [names.index(c) for c in ip.PLACES365_NATURE_CLASSES]
  rng = np.random.default_rng(0 if split == 'train' else 1)
  out = []
  for i in range(n):
    label = int(rng.choice(nature) if rng.random() < 0.5 else rng.integers(365))
    image = _noise(int(rng.integers(1 << 30)), 8, 8)
    if i % 5 == 0:
      image = np.repeat(image[..., :1], 3, axis=-1)
    out.append((_jpeg_bytes(image), label, i % 5 == 0))
  return out, set(nature)


def _fake_as_dataset(self, split, decoders=None, read_config=None,
                     shuffle_files=False):
  """Stands in for FileReaderBuilder._as_dataset: encoded images, as SkipDecoding reads them."""
  del self, read_config
  assert not shuffle_files and isinstance(decoders['image'], tfds.decode.SkipDecoding)
  examples, _ = _fake_places(str(split))
  return tf.data.Dataset.from_tensor_slices(dict(
      image=[e[0] for e in examples], label=[e[1] for e in examples],
      filename=[f'{split}/{i}.jpg' for i in range(len(examples))]))


def test_places_keeps_first_colour_nature_images_in_order():
  """places365_nature keeps exactly the first num_train / num_val colour images of nature labels."""
  _places_label_names()
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
    splits = ip.build_splits(_data_config(source='places365_nature',
                                          num_train=12, num_val=6))
  for split, tfds_split, count, images in (('train', 'train', 12, splits.train),
                                           ('val', 'validation', 6, splits.val)):
    examples, nature = _fake_places(tfds_split)
    wanted = [blob for blob, label, gray in examples
              if label in nature and not gray][:count]
    assert list(images.blobs) == wanted
    read = examples[:[e[0] for e in examples].index(wanted[-1]) + 1]
    gray = sum(1 for _, label, g in read if g and label in nature)
    assert splits.stats[split]['grayscale'] == gray
  assert splits.stats['train']['grayscale'] > 0
  batch = next(ip.train_batches(splits, _data_config(), image_size=8,
                                global_batch_size=4, seed=0, epoch=0))
  assert batch['image'].shape == (4, 8, 8, 3)


def test_places_with_too_few_nature_images_raises():
  """Asking for more nature images than the split has is an error, not a short dataset.

  Runs on TFDS's own random mock (random labels, random PNGs).
  """
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(ValueError, match='only'):
      ip.build_splits(_data_config(source='places365_nature', num_train=50,
                                   num_val=1))


def test_an_empty_places_class_list_is_refused_not_the_default():
  """places_classes=() asks for no scenes; it silently trained on the nature classes."""
  with pytest.raises(ValueError, match='places_classes is empty'):
    ip.build_splits(_data_config(source='places365_nature', num_train=4, num_val=1,
                                 places_classes=()))


def test_camera_numbers_and_words_are_not_crop_indices():
  """Only a one- or two-digit suffix marks a crop: a camera's IMG_0001..IMG_0040 are 40
  photos split about as asked (they once counted as one photo, all on one side), and
  words after an underscore are part of a photo's name."""
  assert ip.photo_stem('train/bsds_100007_1.jpg') == os.path.join('train', 'bsds_100007')
  assert ip.photo_stem('a/crop_12.png') == os.path.join('a', 'crop')
  for name in ('IMG_0001.JPG', 'DSC_1234.jpg', 'beach_sunset.jpg', 'bsds_100007.jpg'):
    assert ip.photo_stem(name) == os.path.splitext(name)[0]
  camera = [f'IMG_{i:04d}.JPG' for i in range(1, 401)]
  train, val = ip.split_by_photo(camera, 0.1)
  assert 20 <= len(val) <= 60 and len(train) + len(val) == 400


def test_file_names_that_are_not_utf8_are_read_like_any_other(tmp_path):
  """A name that is not valid UTF-8 (b'caf\\xe9.png', from an old Latin-1 archive) is a
  name on Linux: split, hashed and decoded like the others (it stopped the pipeline)."""
  folder = os.fsencode(tmp_path)
  sources = [_noise(s) for s in range(6)]
  try:
    for i, rgb in enumerate(sources):
      name = b'caf\xe9_%d.png' % i if i % 2 else b'p%d.png' % i
      Image.fromarray(rgb).save(folder + b'/' + name)
  except (OSError, ValueError):
    pytest.skip('this file system takes UTF-8 names only')
  splits = ip.build_splits(_data_config(folder=str(tmp_path), val_fraction=0.3))
  assert splits.num_train + splits.num_val == 6
  batch = _collect(ip.val_batches(
      ip.Splits(train=splits.train, val=splits.train, train_epoch_size=0, stats={}),
      image_size=SIZE, global_batch_size=splits.num_train))
  got = [_which(img, sources) for b in batch for img in b['image']]
  assert sorted(got) == sorted(
      int(os.fsencode(n)[-5:-4]) for n in splits.train.names)
