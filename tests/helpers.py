"""Shared pieces of the tests: tiny photo folders and a tiny training config."""

import numpy as np
from PIL import Image

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
