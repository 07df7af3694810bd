"""Train on a folder of your own colour photos.

  python launch.py train --config experiments/folder.py --workdir runs/mine \
      --config.data.folder=/path/to/photos

With train/ and val/ subfolders those are the splits; otherwise 10% of the photos
(by source photo: crops sharing a name up to the last underscore stay together)
go to validation. The settings below suit a few thousand photos on one GPU; on a
CPU, try --config.image_size=128 --config.model.width=32.
"""

from experiments import default


def get_config():
  config = default.get_config()
  config.data.source = 'folder'
  # Required: --config.data.folder=/path/to/photos.
  config.data.random_resized_crop = True   # small datasets: new crops every epoch
  config.data.crop_scale = (0.5, 1.0)
  config.image_size = 256
  config.batch_size = 16
  config.num_epochs = 20
  return config
