"""A run this repository's 2-core CPU can manage: the shared photos at 128x128, width 32.

  python launch.py train --config experiments/photos_cpu.py --workdir runs/photos_cpu

The photos are shared/data/photos beside this repository (train/ 3,110 and val/ 199
colour photos at 256x256, see SOURCES.md there), wherever the command is run from;
--config.data.folder points elsewhere. Results of this run: experiments/RESULTS.md.
"""

import os

from experiments import folder

SHARED_PHOTOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             os.pardir, 'shared', 'data', 'photos')


def get_config():
  config = folder.get_config()
  config.data.folder = os.path.normpath(SHARED_PHOTOS)
  config.image_size = 128
  config.model.width = 32       # a quarter of the paper's compute per image
  config.batch_size = 16
  config.num_epochs = 8
  config.log_every_steps = 20
  config.num_sample_images = 8
  return config
