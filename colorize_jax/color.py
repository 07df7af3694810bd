"""sRGB <-> CIELAB conversion and the networks' normalisation, as jit-able JAX functions.

CIELAB with the D65 white point and the 2-degree observer, through linear sRGB and
CIE XYZ, with the same constants as `skimage.color.rgb2lab` / `lab2rgb` so that
results agree with scikit-image to float32 precision.

Ranges used across the project:
  rgb: uint8 in [0, 255] or float in [0, 1]
  L:   [0, 100]
  ab:  about [-86, 98] for a* and [-108, 95] for b* inside the sRGB gamut; the
       networks use [-110, 110] (pix2pix's scale) mapped to [-1, 1].
"""

import jax.numpy as jnp
import numpy as np

# Constants are numpy, not jax, arrays: creating jax arrays at import time would
# initialise the backend before `jax.distributed.initialize` can run.
# sRGB primaries -> CIE XYZ (sRGB specification, as in scikit-image).
_XYZ_FROM_RGB = np.array([
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
], dtype=np.float64)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB).astype(np.float32)
_XYZ_FROM_RGB = _XYZ_FROM_RGB.astype(np.float32)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)

# CIE's piecewise cube root, with the (rounded) constants scikit-image uses.
_EPSILON = 0.008856
_KAPPA_SLOPE = 7.787
_F_BREAK = 0.2068966  # f(_EPSILON): where the inverse switches branch

L_RANGE = 100.0
AB_RANGE = 110.0


def _srgb_to_linear(c):
  return jnp.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)


def _linear_to_srgb(c):
  # Clamp before the power: negative linear values would give NaN.
  safe = jnp.maximum(c, 0.0031308)
  return jnp.where(c > 0.0031308, 1.055 * safe ** (1 / 2.4) - 0.055, c * 12.92)


def full_scale(dtype) -> float:
  """The value of white for RGB of `dtype`: 255 (uint8), 65535 (uint16), 1.0 (floats).

  Raises:
    ValueError: other dtypes (int32, bool, ...), whose scale one cannot tell: an int32
      image of 8-bit counts read as 0..1 floats was ~100x too bright.
  """
  dtype = np.dtype(dtype)
  if dtype == np.uint8:
    return 255.0
  if dtype == np.uint16:
    return 65535.0
  if np.issubdtype(dtype, np.floating) or dtype == jnp.bfloat16:
    return 1.0
  raise ValueError(f'RGB must be uint8, uint16 or float in [0, 1], got {dtype}')


def to_float_rgb(rgb: jnp.ndarray) -> jnp.ndarray:
  """Returns rgb (uint8, uint16 or float in [0, 1]) as float32 in [0, 1]."""
  scale = full_scale(rgb.dtype)
  rgb = rgb.astype(jnp.float32)
  return rgb / scale if scale != 1.0 else rgb


def rgb_to_lab(rgb: jnp.ndarray) -> jnp.ndarray:
  """Converts sRGB to CIELAB (D65, 2-degree observer).

  Args:
    rgb: [..., 3] uint8 in [0, 255], uint16 in [0, 65535] or float in [0, 1].

  Returns:
    [..., 3] float32: L in [0, 100], a* and b* roughly in [-110, 110].
  """
  linear = _srgb_to_linear(to_float_rgb(rgb))
  xyz = linear @ _XYZ_FROM_RGB.T / _D65_WHITE
  f = jnp.where(xyz > _EPSILON, jnp.cbrt(xyz), _KAPPA_SLOPE * xyz + 16.0 / 116.0)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: jnp.ndarray, clip: bool = True) -> jnp.ndarray:
  """Converts CIELAB (D65, 2-degree observer) to sRGB, clipping out-of-gamut colours.

  Args:
    lab: [..., 3] float: L in [0, 100], ab in about [-110, 110].
    clip: if False, out-of-gamut colours keep their channels below 0 or above 1
      (which tells them apart from colours on the gamut's surface).

  Returns:
    [..., 3] float32 sRGB in [0, 1] (unbounded with clip=False).
  """
  lab = lab.astype(jnp.float32)
  fy = (lab[..., 0] + 16.0) / 116.0
  fx = fy + lab[..., 1] / 500.0
  # Negative Z has no physical meaning; scikit-image clamps it to 0 as well.
  fz = jnp.maximum(fy - lab[..., 2] / 200.0, 0.0)
  f = jnp.stack([fx, fy, fz], axis=-1)
  xyz = jnp.where(f > _F_BREAK, f ** 3, (f - 16.0 / 116.0) / _KAPPA_SLOPE) * _D65_WHITE
  rgb = _linear_to_srgb(xyz @ _RGB_FROM_XYZ.T)
  return jnp.clip(rgb, 0.0, 1.0) if clip else rgb


def rgb_to_gray_l(rgb: jnp.ndarray) -> jnp.ndarray:
  """Returns the lightness L in [0, 100], shape [...], of sRGB [..., 3] (uint8 or [0, 1])."""
  return rgb_to_lab(rgb)[..., 0]


def normalize_l(l: jnp.ndarray) -> jnp.ndarray:
  """Maps L in [0, 100] to [-1, 1] (the generator's and discriminator's input scale)."""
  return l / (L_RANGE / 2) - 1.0


def denormalize_l(l_norm: jnp.ndarray) -> jnp.ndarray:
  """Maps normalised L in [-1, 1] back to [0, 100]."""
  return (l_norm + 1.0) * (L_RANGE / 2)


def normalize_ab(ab: jnp.ndarray) -> jnp.ndarray:
  """Maps ab in [-110, 110] to [-1, 1] (pix2pix's scale; tanh output range)."""
  return ab / AB_RANGE


def denormalize_ab(ab_norm: jnp.ndarray) -> jnp.ndarray:
  """Maps normalised ab in [-1, 1] back to [-110, 110]."""
  return ab_norm * AB_RANGE


def rgb_to_model_inputs(rgb: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Splits an RGB batch into the networks' normalised inputs and targets.

  Args:
    rgb: [N, H, W, 3] uint8 or float in [0, 1].

  Returns:
    (l_norm [N, H, W, 1], ab_norm [N, H, W, 2]), both float32 in about [-1, 1].
  """
  lab = rgb_to_lab(rgb)
  return normalize_l(lab[..., :1]), normalize_ab(lab[..., 1:])


def model_outputs_to_rgb(l_norm: jnp.ndarray, ab_norm: jnp.ndarray) -> jnp.ndarray:
  """Joins normalised L [..., 1] and ab [..., 2] into sRGB float32 [..., 3] in [0, 1]."""
  lab = jnp.concatenate([denormalize_l(l_norm), denormalize_ab(ab_norm)], axis=-1)
  return lab_to_rgb(lab)
