"""Tests of the Turing-test study builder (colorize_jax.turing.study)."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from colorize_jax.turing import study as study_lib


def make_photos(n, size=32, seed=0):
  rng = np.random.default_rng(seed)
  return [(f'photo_{i:03d}', rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
          for i in range(n)]


def hue_shift(rgb):
  """Stand-in for the model: rotates the RGB channels (a deterministic hue shift)."""
  return np.ascontiguousarray(rgb[..., [1, 2, 0]])


def read_rgb(path):
  with Image.open(path) as img:
    return np.asarray(img.convert('RGB'))


def png_chunk_types(path):
  data = path.read_bytes()
  assert data[:8] == b'\x89PNG\r\n\x1a\n'
  types, pos = [], 8
  while pos < len(data):
    length = int.from_bytes(data[pos:pos + 4], 'big')
    types.append(data[pos + 4:pos + 8].decode('ascii'))
    pos += 12 + length
  return types


def test_builds_the_requested_pairs_with_the_right_pixels(tmp_path):
  """num_pairs pairs are written; each real file holds the photo and each generated file
  holds colorize(photo), pixel for pixel."""
  photos = make_photos(12)
  by_id = dict(photos)
  study = study_lib.build_study(photos, hue_shift, tmp_path / 's', num_pairs=5, seed=3)
  assert study.num_pairs == 5
  assert len({p.photo_id for p in study.pairs}) == 5
  assert sorted(os.listdir(study.images_dir)) == sorted(study.image_names())
  assert len(study.image_names()) == 10
  for pair in study.pairs:
    np.testing.assert_array_equal(read_rgb(study.images_dir / pair.real_image),
                                  by_id[pair.photo_id])
    np.testing.assert_array_equal(read_rgb(study.images_dir / pair.generated_image),
                                  hue_shift(by_id[pair.photo_id]))
  assert study_lib.load_study(tmp_path / 's') == study


def test_same_seed_gives_same_photos_ids_and_order(tmp_path):
  """Rebuilding with the same photos and seed picks the same photos, gives the same
  pair ids and the same manifest order; another seed picks differently."""
  photos = make_photos(30)
  a = study_lib.build_study(photos, hue_shift, tmp_path / 'a', num_pairs=8, seed=7)
  b = study_lib.build_study(photos, hue_shift, tmp_path / 'b', num_pairs=8, seed=7)
  c = study_lib.build_study(photos, hue_shift, tmp_path / 'c', num_pairs=8, seed=8)

  def key(s):
    return [(p.pair_id, p.photo_id, p.images.index(p.real_image)) for p in s.pairs]

  assert key(a) == key(b)
  assert [p.photo_id for p in a.pairs] != [p.photo_id for p in c.pairs]
  assert all(re.fullmatch(r'[0-9a-f]{16}', p.pair_id) for p in a.pairs)
  assert a.pair(a.pairs[0].pair_id) == a.pairs[0]
  assert a.pair('0' * 16) is None


def test_manifest_sides_are_balanced_and_seeded():
  """The real image is listed first in half the pairs (+-1 for odd counts), and which
  pairs those are changes with the seed but not between calls with one seed."""
  patterns = set()
  for num_pairs in (1, 2, 7, 20):
    for seed in range(6):
      mask = study_lib.real_first_mask(num_pairs, seed)
      assert mask.shape == (num_pairs,) and mask.dtype == bool
      assert int(mask.sum()) in (num_pairs // 2, (num_pairs + 1) // 2)
      np.testing.assert_array_equal(mask, study_lib.real_first_mask(num_pairs, seed))
      if num_pairs == 20:
        patterns.add(tuple(mask))
  assert len(patterns) == 6


def test_file_names_and_files_reveal_nothing(tmp_path):
  """Image names are 32 random hex digits (not derived from the seed, pair, photo or
  side), PNGs carry no metadata chunks, and all images share one mtime."""
  photos = make_photos(10)
  a = study_lib.build_study(photos, hue_shift, tmp_path / 'a', num_pairs=6, seed=0)
  b = study_lib.build_study(photos, hue_shift, tmp_path / 'b', num_pairs=6, seed=0)
  assert not a.image_names() & b.image_names()
  for pair in a.pairs:
    for name in pair.images:
      assert study_lib.IMAGE_NAME_RE.fullmatch(name)
      assert pair.pair_id not in name and pair.photo_id not in name
      assert png_chunk_types(a.images_dir / name) == ['IHDR', 'IDAT', 'IEND']
      with Image.open(a.images_dir / name) as img:
        assert not img.info and not img.getexif()
  mtimes = {(a.images_dir / n).stat().st_mtime for n in a.image_names()}
  assert len(mtimes) == 1


def test_real_and_generated_files_have_one_length(tmp_path):
  """However much richer the real photos' colours are than the colorizations' (here flat
  gray against noise, which compress very differently), every image file of a study has
  the same length, so neither a file listing nor a Content-Length tells them apart."""
  study = study_lib.build_study(make_photos(6), lambda rgb: np.full_like(rgb, 128),
                                tmp_path / 's', num_pairs=6, seed=0)
  sizes = {(study.images_dir / n).stat().st_size for n in study.image_names()}
  assert len(sizes) == 1


def test_refuses_to_overwrite_unless_asked(tmp_path):
  """A second build into a study folder raises and leaves the study (and its answers)
  untouched; overwrite=True is refused while the study is served, and otherwise
  replaces the study, setting the old one and its answers aside, and leaves unrelated
  files alone."""
  photos = make_photos(10)
  out = tmp_path / 's'
  first = study_lib.build_study(photos, hue_shift, out, num_pairs=4, seed=0)
  (out / study_lib.RESPONSES_DB).write_bytes(b'answers')
  (out / 'notes.txt').write_text('keep me')
  manifest = (out / study_lib.MANIFEST).read_text()
  with pytest.raises(FileExistsError, match='overwrite=True'):
    study_lib.build_study(photos, hue_shift, out, num_pairs=4, seed=0)
  assert (out / study_lib.MANIFEST).read_text() == manifest
  assert (out / study_lib.RESPONSES_DB).exists()

  with study_lib.serving_lock(out):   # as a running server holds it
    with pytest.raises(study_lib.StudyError, match='in use'):
      study_lib.build_study(photos, hue_shift, out, num_pairs=4, seed=0, overwrite=True)
  assert (out / study_lib.MANIFEST).read_text() == manifest

  second = study_lib.build_study(photos, hue_shift, out, num_pairs=4, seed=0, overwrite=True)
  assert second.study_id != first.study_id
  assert [p.pair_id for p in second.pairs] == [p.pair_id for p in first.pairs]
  assert not (out / study_lib.RESPONSES_DB).exists()
  # The replaced study, answers included, is set aside, not deleted: they are results.
  (aside,) = (out / study_lib.REPLACED_DIR).iterdir()
  assert (aside / study_lib.RESPONSES_DB).read_bytes() == b'answers'
  assert (aside / study_lib.MANIFEST).read_text() == manifest
  assert (out / 'notes.txt').read_text() == 'keep me'
  assert sorted(os.listdir(out / study_lib.IMAGES_DIR)) == sorted(second.image_names())
  assert [p.name for p in out.iterdir() if p.name.startswith('.building')] == []


def test_batched_colorize_matches_per_image(tmp_path):
  """With batched=True colorize is called once on uint8 [N, H, W, 3] and the study holds
  the same pixels as with per-image calls."""
  photos = make_photos(9)
  calls = []

  def batched(x):
    calls.append(x.shape)
    return hue_shift(x)

  study = study_lib.build_study(photos, batched, tmp_path / 's', num_pairs=4, seed=1,
                                batched=True)
  assert calls == [(4, 32, 32, 3)]
  by_id = dict(photos)
  for pair in study.pairs:
    np.testing.assert_array_equal(read_rgb(study.images_dir / pair.generated_image),
                                  hue_shift(by_id[pair.photo_id]))


@pytest.mark.parametrize('photos, colorize, kwargs, match', [
    (make_photos(3), hue_shift, {'num_pairs': 4}, 'num_pairs'),
    (make_photos(3), hue_shift, {'num_pairs': 0}, 'num_pairs'),
    (make_photos(3), lambda x: x[:16], {'num_pairs': 2}, 'must match in size'),
    (make_photos(3), lambda x: x.astype(np.float32), {'num_pairs': 2}, 'uint8'),
    ([('a', np.zeros((8, 8), np.uint8)), ('b', np.zeros((8, 8, 3), np.uint8))], hue_shift,
     {'num_pairs': 2}, 'uint8 RGB'),
    ([('a', np.zeros((8, 8, 3), np.uint8))] * 2, hue_shift, {'num_pairs': 2}, 'duplicate'),
    ([('a', np.zeros((8, 8, 3), np.uint8)), ('b', np.zeros((9, 8, 3), np.uint8))], hue_shift,
     {'num_pairs': 2, 'batched': True}, 'one size'),
])
def test_bad_inputs_raise_and_write_no_study(tmp_path, photos, colorize, kwargs, match):
  """Bad photos, arguments or colorize outputs raise a ValueError that says what is
  wrong, and leave no (partial) study behind."""
  with pytest.raises(ValueError, match=match):
    study_lib.build_study(photos, colorize, tmp_path / 's', seed=0, **kwargs)
  assert not (tmp_path / 's' / study_lib.MANIFEST).exists()
  assert not (tmp_path / 's' / study_lib.IMAGES_DIR).exists()


def test_load_study_reports_broken_folders(tmp_path):
  """A missing manifest, a corrupt manifest or a missing image give a StudyError with
  the reason, not a bare traceback."""
  with pytest.raises(study_lib.StudyError, match='missing'):
    study_lib.load_study(tmp_path)
  study = study_lib.build_study(make_photos(4), hue_shift, tmp_path / 's', num_pairs=2)
  manifest = tmp_path / 's' / study_lib.MANIFEST
  raw = json.loads(manifest.read_text())
  (study.images_dir / study.pairs[0].real_image).unlink()
  with pytest.raises(study_lib.StudyError, match='missing'):
    study_lib.load_study(tmp_path / 's')
  manifest.write_text('{not json')
  with pytest.raises(study_lib.StudyError, match='cannot read'):
    study_lib.load_study(tmp_path / 's')
  raw['pairs'][1]['real_image'] = '../../etc/passwd'
  manifest.write_text(json.dumps(raw))
  with pytest.raises(study_lib.StudyError, match='malformed'):
    study_lib.load_study(tmp_path / 's')
