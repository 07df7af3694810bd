"""Image grids for people to look at: gray input | colorized | real photo."""

import numpy as np

from colorize_jax import images


def gray_rgb(rgb: np.ndarray) -> np.ndarray:
  """The black-and-white version the model sees, as RGB: uint8 [..., 3] -> uint8 [..., 3].

  Uses CIELAB lightness (ab = 0), so that it shows exactly the model's input.
  """
  from colorize_jax import color  # JAX import kept out of module import for light users
  l = np.asarray(color.rgb_to_gray_l(np.asarray(rgb)))[..., None]
  lab = np.concatenate([l, np.zeros(l.shape[:-1] + (2,), np.float32)], axis=-1)
  return images.to_uint8(np.asarray(color.lab_to_rgb(lab)))


def comparison_grid(columns: list[np.ndarray], pad: int = 2) -> np.ndarray:
  """Tiles images into rows (one per example) and columns (one per array).

  Args:
    columns: arrays of equal shape uint8 [N, H, W, 3] (or float in [0, 1]),
      e.g. [gray, generated, real].
    pad: white pixels between tiles.

  Returns:
    uint8 [N * (H + pad) + pad, len(columns) * (W + pad) + pad, 3].
  """
  n, h, w, _ = columns[0].shape
  grid = np.full((n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255, np.uint8)
  for col, tiles in enumerate(columns):
    for row in range(n):
      top, left = pad + row * (h + pad), pad + col * (w + pad)
      grid[top:top + h, left:left + w] = images.to_uint8(tiles[row])
  return grid
