"""Tests of the sRGB <-> CIELAB conversion and the networks' normalisation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor

from colorize_jax import color

CUBE_CORNERS = np.array(list(itertools.product([0.0, 1.0], repeat=3)), np.float64)


def _random_rgb(n=4096, seed=0):
  return np.random.default_rng(seed).random((n, 3))


@pytest.mark.parametrize('rgb', [CUBE_CORNERS, _random_rgb()], ids=['cube_corners', 'random'])
def test_rgb_to_lab_matches_scikit_image(rgb):
  """Lab agrees with skimage.color.rgb2lab (D65, 2 deg) within 1e-3 Lab units."""
  ours = np.asarray(jax.jit(color.rgb_to_lab)(rgb.astype(np.float32)))
  np.testing.assert_allclose(ours, skcolor.rgb2lab(rgb), atol=1e-3)


def test_lab_to_rgb_matches_scikit_image_in_and_out_of_gamut():
  """RGB from Lab agrees with skimage.color.lab2rgb, including its clipping out of gamut."""
  rng = np.random.default_rng(1)
  in_gamut = skcolor.rgb2lab(_random_rgb(2048, seed=2))
  wild = np.stack([rng.uniform(0, 100, 2048), rng.uniform(-110, 110, 2048),
                   rng.uniform(-110, 110, 2048)], axis=-1)
  lab = np.concatenate([in_gamut, wild])
  ours = np.asarray(jax.jit(color.lab_to_rgb)(lab.astype(np.float32)))
  with np.testing.suppress_warnings() as sup:
    sup.filter(UserWarning)
    expected = skcolor.lab2rgb(lab)
  np.testing.assert_allclose(ours, expected, atol=1e-4)
  assert ours.min() >= 0.0 and ours.max() <= 1.0


def test_round_trip_rgb_lab_rgb():
  """RGB -> Lab -> RGB returns every colour (corners and random) within 1e-4."""
  rgb = np.concatenate([CUBE_CORNERS, _random_rgb(seed=3)]).astype(np.float32)
  back = jax.jit(lambda x: color.lab_to_rgb(color.rgb_to_lab(x)))(rgb)
  np.testing.assert_allclose(np.asarray(back), rgb, atol=1e-4)


def test_uint8_and_uint16_inputs_are_scaled_to_full_range_and_other_integers_refused():
  """uint8 (/255) and uint16 (/65535) RGB convert like the same colours as floats in [0, 1];
  an int32 or bool array has no scale one can tell (int32 8-bit counts were read as 0..1
  floats: white came out at L = 9342), so it is a ValueError."""
  rgb8 = np.random.default_rng(4).integers(0, 256, (8, 5, 3), dtype=np.uint8)
  want = np.asarray(color.rgb_to_lab(rgb8.astype(np.float32) / 255))
  np.testing.assert_allclose(np.asarray(color.rgb_to_lab(rgb8)), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(color.rgb_to_lab(rgb8.astype(np.uint16) * 257)), want,
                             atol=1e-4)
  for dtype in (np.int32, np.int64, np.bool_):
    with pytest.raises(ValueError, match='uint8, uint16 or float'):
      color.rgb_to_lab(rgb8.astype(dtype))


def test_gray_has_zero_ab_and_white_has_l_100():
  """Neutral colours have a* = b* = 0 and L spans [0, 100] from black to white."""
  gray = np.linspace(0, 1, 11, dtype=np.float32)[:, None].repeat(3, axis=1)
  lab = np.asarray(color.rgb_to_lab(gray))
  # The sRGB matrix's rounded rows (as in scikit-image) put grays 0.005 off axis.
  np.testing.assert_allclose(lab[:, 1:], 0.0, atol=1e-2)
  np.testing.assert_allclose(lab[[0, -1], 0], [0.0, 100.0], atol=1e-3)


def test_normalisation_maps_ranges_to_unit_interval_and_back():
  """L [0, 100] and ab [-110, 110] map onto [-1, 1] and back without loss."""
  l = jnp.array([0.0, 50.0, 100.0])
  ab = jnp.array([-110.0, 0.0, 110.0])
  np.testing.assert_allclose(color.normalize_l(l), [-1.0, 0.0, 1.0])
  np.testing.assert_allclose(color.normalize_ab(ab), [-1.0, 0.0, 1.0])
  np.testing.assert_allclose(color.denormalize_l(color.normalize_l(l)), l)
  np.testing.assert_allclose(color.denormalize_ab(color.normalize_ab(ab)), ab)


def test_model_inputs_round_trip_to_rgb():
  """Splitting a photo into normalised (L, ab) and joining them back restores it."""
  rgb = np.random.default_rng(5).random((2, 6, 7, 3)).astype(np.float32)
  l_norm, ab_norm = color.rgb_to_model_inputs(rgb)
  assert l_norm.shape == (2, 6, 7, 1) and ab_norm.shape == (2, 6, 7, 2)
  assert float(jnp.abs(l_norm).max()) <= 1.0 and float(jnp.abs(ab_norm).max()) <= 1.0
  np.testing.assert_allclose(np.asarray(color.model_outputs_to_rgb(l_norm, ab_norm)), rgb,
                             atol=1e-4)
