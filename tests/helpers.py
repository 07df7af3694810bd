"""Shared pieces of the tests: tiny photo folders, a tiny training config, measurements."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from colorize_jax import models
from experiments import default

TINY_SIZE = 32


def write_photos(folder, count: int, seed: int, size: int = 48) -> None:
  """Writes `count` blocky colour PNGs (learnable colour, unlike noise) into `folder`."""
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(count):
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = np.kron(blocks, np.ones((size // 4, size // 4, 1), np.uint8))
    Image.fromarray(image).save(folder / f'p{i}_0.png')


def make_photo_folder(root, num_train: int = 12, num_val: int = 3):
  """A folder with train/ and val/ subfolders of blocky photos; returns `root`."""
  write_photos(root / 'train', num_train, seed=0)
  write_photos(root / 'val', num_val, seed=1)
  return root


def tiny_settings(photos, num_epochs: int = 2, batch_size: int = 4) -> dict:
  """Dotted config fields that shrink experiments/default.py to a seconds-long run."""
  return {
      'data.source': 'folder',
      'data.folder': str(photos),
      'data.random_resized_crop': True,
      'image_size': TINY_SIZE,
      'batch_size': batch_size,
      'num_epochs': num_epochs,
      'model.width': 4,
      'log_every_steps': 2,
      'num_sample_images': 2,
  }


def tiny_config(photos, num_epochs: int = 2, batch_size: int = 4):
  """experiments/default.py with `tiny_settings` applied."""
  config = default.get_config()
  for key, value in tiny_settings(photos, num_epochs, batch_size).items():
    *parents, name = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  return config


def tiny_flags(photos, num_epochs: int = 2, batch_size: int = 4) -> list[str]:
  """The same settings as `launch.py` flags, after --config=experiments/default.py."""
  return [f'--config.{k}={v}' for k, v in tiny_settings(photos, num_epochs, batch_size).items()]


def damage_checkpoint(step_dir, how='truncate'):
  """Truncates ('truncate') or flips bytes in ('flip') every data file of a checkpoint's state."""
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file() and p.parent.name == 'd']
  assert files, 'no data files found to damage'
  for path in files:
    data = path.read_bytes()
    if how == 'truncate':
      path.write_bytes(data[:len(data) // 2])
    else:
      path.write_bytes(data[:16] + bytes(b ^ 0xFF for b in data[16:]))


_D50 = (0.9642, 1.0, 0.8249)
# Adobe RGB (1998), its primaries adapted to D50 as ICC profiles store them, and its gamma.
ADOBE_RGB_D50 = ((0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087),
                 (0.14919, 0.06322, 0.74457))
ADOBE_RGB_GAMMA = 563 / 256


def icc_profile(space: str, gamma: float, primaries=None, name: str = 'test profile') -> bytes:
  """A minimal ICC v2 display profile ('GRAY' with a gamma curve, or 'RGB' with a matrix of
  `primaries` (XYZ of R, G, B, D50) and one gamma), written out by hand: no profile file
  can be downloaded here, and Pillow makes only sRGB, Lab and XYZ ones."""
  import struct  # pylint: disable=g-import-not-at-top

  def s15(x):
    return struct.pack('>i', round(x * 65536))

  def xyz(values):
    return b'XYZ ' + b'\0' * 4 + b''.join(s15(v) for v in values)

  curve = b'curv' + b'\0' * 4 + struct.pack('>IH', 1, round(gamma * 256)) + b'\0\0'
  text = name.encode('ascii') + b'\0'
  desc = (b'desc' + b'\0' * 4 + struct.pack('>I', len(text)) + text + b'\0' * 8 + b'\0' * 3 +
          b'\0' * 67)
  tags = [(b'desc', desc), (b'cprt', b'text' + b'\0' * 4 + b'none\0'), (b'wtpt', xyz(_D50))]
  if space == 'GRAY':
    tags.append((b'kTRC', curve))
  else:
    tags += [(b'rXYZ', xyz(primaries[0])), (b'gXYZ', xyz(primaries[1])),
             (b'bXYZ', xyz(primaries[2])), (b'rTRC', curve), (b'gTRC', curve),
             (b'bTRC', curve)]
  offset, data, table = 128 + 4 + 12 * len(tags), b'', b''
  for signature, body in tags:
    data += b'\0' * (-(offset + len(data)) % 4)
    table += signature + struct.pack('>II', offset + len(data), len(body))
    data += body
  data += b'\0' * (-len(data) % 4)
  header = (struct.pack('>I', offset + len(data)) + b'\0' * 4 + struct.pack('>I', 0x02100000) +
            b'mntr' + space.ljust(4).encode('ascii') + b'XYZ ' + b'\0' * 12 + b'acsp' +
            b'\0' * 28 + b''.join(s15(v) for v in _D50) + b'\0' * 48)
  assert len(header) == 128
  return header + struct.pack('>I', len(tags)) + table + data


def measured_receptive_field(disc: models.Discriminator, size: int = 128) -> int:
  """Side of the input window that one central logit of `disc` (initialised at random,
  eval mode) depends on, measured by its gradient; asserts that window is a full square.

  "Depends" is a gradient above 1e-5 of the largest: the stride-1 layer's Winograd
  transforms leave float rounding (<= 3e-7 of it, measured) outside the window, while
  the window's smallest entries are ~2e-3 of it.
  """
  l_norm, ab_norm = jnp.zeros((1, size, size, 1)), jnp.zeros((1, size, size, 2))
  variables = models.init_variables(disc, jax.random.PRNGKey(0), l_norm, ab_norm)
  inputs = jax.random.normal(jax.random.PRNGKey(1), (1, size, size, 3))
  side = models.discriminator_output_size(size, disc.num_layers)

  def center_logit(x):
    logits = disc.apply(variables, x[..., :1], x[..., 1:], train=False)
    return logits[0, side // 2, side // 2, 0]

  grad = np.asarray(jnp.abs(jax.jit(jax.grad(center_logit))(inputs)).sum(axis=(0, 3)))
  touched = grad > 1e-5 * grad.max()
  rows, cols = np.nonzero(touched)
  height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
  assert height == width and touched.sum() == height * width, 'not a full square window'
  return int(height)


def locked(monkeypatch, folder):
  """Makes listing `folder` fail as a folder without read permission does (root, whom
  the tests may run as, reads every folder)."""
  scandir = os.scandir
  def refuse(path='.'):
    if os.path.realpath(path) == os.path.realpath(folder):
      raise PermissionError(13, 'Permission denied', os.fspath(path))
    return scandir(path)
  monkeypatch.setattr(os, 'scandir', refuse)
