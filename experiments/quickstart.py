"""Quickstart: a small GAN on the photos that ship with scikit-image and scikit-learn.

Runs offline on a fresh machine in a few CPU minutes, and shows every part of the
system: the input pipeline, training with validation, sample grids, checkpoints.

  python launch.py train --config experiments/quickstart.py --workdir runs/quickstart
"""

from experiments import default


def get_config():
  config = default.get_config()
  config.data.source = 'samples'
  config.data.random_resized_crop = True  # 8 training photos: every crop is new
  config.data.crop_scale = (0.1, 1.0)
  config.data.samples_per_epoch = 512
  config.image_size = 64
  config.batch_size = 16
  config.num_epochs = 4
  config.model.width = 16
  config.log_every_steps = 8
  return config
