"""Tests of the experiment configs under experiments/."""

import glob
import os

from absl import flags
from ml_collections import config_flags
import pytest

from colorize_jax import models
from colorize_jax import steps
from experiments import default
from experiments import paper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, 'experiments', '*.py'))
                      if not p.endswith('__init__.py'))


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_every_config_file_loads_as_launch_py_loads_it_and_builds_a_gan(path):
  """Each config file parses through ml_collections' config_flags (as `launch.py` reads
  it), is locked against typos, and yields a valid model and optimizer setup."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', path, flag_values=flag_values, lock_config=True)
  flag_values(['launch.py'])
  config = flag_values.config
  with pytest.raises(AttributeError):
    config.learning_rate = 1.0  # a misspelt override must fail, not be ignored
  models.unet_depth(config.image_size)
  steps.GAN.from_config(config)


def test_paper_config_holds_the_papers_settings():
  """experiments/paper.py has the paper's data, epochs, patch size and losses (sec. 3)."""
  config = paper.get_config()
  assert config.data.source == 'places365_nature'
  assert (config.data.num_train, config.data.num_val) == (15_000, 3_000)
  assert config.num_epochs == 20 and config.image_size == 256
  assert models.receptive_field(config.model.disc_layers) == 34
  assert config.loss.real_label == 0.9 and config.loss.l1_weight == 100.0
  assert config.optim.g_learning_rate != config.optim.d_learning_rate
  assert config.keep_checkpoints is None


def test_default_config_uses_the_papers_values():
  """The default config is the paper's where the paper gives a value."""
  config = default.get_config()
  assert models.receptive_field(config.model.disc_layers) == 34
  assert config.loss.real_label == 0.9 and config.num_epochs == 20
