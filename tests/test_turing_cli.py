"""`launch.py turing` and `turing-report` on a tiny trained run."""

import os
import re
import types

import numpy as np
import pytest
from PIL import Image

from colorize_jax import cli
from colorize_jax import color
from colorize_jax import train
from colorize_jax import turing
from tests import helpers
from tests import test_turing_server


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  photos = helpers.make_photo_folder(tmp_path_factory.mktemp('photos'), num_val=6)
  workdir = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(helpers.tiny_config(photos, num_epochs=1), str(workdir))
  return workdir


def flags(workdir):
  return types.SimpleNamespace(workdir=str(workdir))


def test_turing_builds_a_study_of_real_and_colorized_validation_photos(run, capsys):
  """The study holds the requested pairs; each pair's two images have the same lightness
  (the generated one is the colorization of the real one's grayscale) and differ in colour."""
  assert cli.turing(flags(run), ['--pairs', '4', '--size', '64', '--no-serve']) == 0
  study_dir = run / 'turing' / 'step_3'
  study = turing.load_study(study_dir)
  assert study.num_pairs == 4
  for pair in study.pairs:
    real, fake = (np.asarray(Image.open(study.images_dir / name).convert('RGB'))
                  for name in (pair.real_image, pair.generated_image))
    assert real.shape == fake.shape == (64, 64, 3)
    real_lab, fake_lab = np.asarray(color.rgb_to_lab(real)), np.asarray(color.rgb_to_lab(fake))
    assert np.abs(real_lab[..., 0] - fake_lab[..., 0]).mean() < 1.0  # same L, up to rounding
    assert np.abs(real_lab[..., 1:] - fake_lab[..., 1:]).mean() > 1.0  # other colours
  # Running it again serves (here: keeps) the same study and its answers.
  assert cli.turing(flags(run), ['--pairs', '4', '--size', '64', '--no-serve']) == 0
  assert 'exists: kept it as it is' in capsys.readouterr().out
  assert turing.load_study(study_dir).pairs == study.pairs


def test_turing_report_summarises_the_study(run, capsys):
  """turing-report finds the run's study, says so when nobody has finished, and once a
  participant has answered every pair prints their fool rate beside the paper's figure
  and writes results.html and answers.csv."""
  cli.turing(flags(run), ['--pairs', '4', '--size', '64', '--no-serve'])
  assert cli.turing_report(flags(run), []) == 0
  assert 'No completed participant yet' in capsys.readouterr().out
  study_dir = run / 'turing' / 'step_3'
  client = test_turing_server.new_client(turing.create_app(study_dir))
  test_turing_server.start(client)
  test_turing_server.complete(client, side='left')
  assert cli.turing_report(flags(run), []) == 0
  out = capsys.readouterr().out
  assert re.search(r'Fooled \d of 4 answers: \d+\.\d% .*paper 23%', out), out
  assert {'results.html', 'answers.csv'} <= set(os.listdir(study_dir / 'report'))
  assert cli.turing_report(flags(run), ['--step', '999']) == cli.EXIT_USAGE
  assert 'no study for step 999' in capsys.readouterr().err   # and names step_3


def test_turing_without_a_workdir_is_a_usage_error():
  """Missing --workdir exits with status 2 and a message, not a traceback."""
  assert cli.turing(types.SimpleNamespace(workdir=None), ['--no-serve']) == cli.EXIT_USAGE
