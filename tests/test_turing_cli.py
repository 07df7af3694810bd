"""`launch.py turing` and `turing-report` on a tiny trained run."""

import os
import re
import shutil
import signal
import subprocess
import sys
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
  # The results say which model they test (the paper's 23% is one named checkpoint's).
  page = (study_dir / 'report' / 'results.html').read_text()
  assert f'It tests step 3 of the run\n{run}' in page and 'shown at 64x64' in page
  assert cli.turing_report(flags(run), ['--step', '999']) == cli.EXIT_USAGE
  assert 'no study for step 999' in capsys.readouterr().err   # and names step_3


def test_turing_without_a_workdir_is_a_usage_error():
  """Missing --workdir exits with status 2 and a message, not a traceback."""
  assert cli.turing(types.SimpleNamespace(workdir=None), ['--no-serve']) == cli.EXIT_USAGE


def test_the_seed_picks_among_all_photos_and_the_study_says_what_it_tests(run):
  """--seed chooses which photos become pairs out of all of them (it once always took the
  first --pairs photos), and study.json records the run and step the colorizations came
  from."""
  picked = set()
  for seed in range(4):
    assert cli.turing(flags(run), ['--pairs', '2', '--size', '32', '--seed', str(seed),
                                   '--study', str(run / f'seed{seed}'), '--no-serve']) == 0
    study = turing.load_study(run / f'seed{seed}')
    picked.add(tuple(sorted(p.photo_id for p in study.pairs)))
    assert study.about['workdir'] == str(run) and study.about['step'] == 3
  assert len(picked) > 1


def test_turing_refuses_a_study_of_another_model_or_a_damaged_one(run, tmp_path, capsys):
  """An existing study built from another run or step is not served as if it were this
  one's; a damaged study is named as damaged with the CLI's remedy (--rebuild), not as
  'already holds a study; pass overwrite=True'."""
  study_dir = tmp_path / 'study'
  args = ['--pairs', '2', '--size', '32', '--study', str(study_dir), '--no-serve']
  assert cli.turing(flags(run), args) == 0
  other_run = tmp_path / 'other_run'
  other_run.mkdir()
  for name in os.listdir(run):
    if name != 'turing':
      os.symlink(run / name, other_run / name)
  assert cli.turing(flags(other_run), args) == cli.EXIT_USAGE
  assert f'holds a study of step 3 of {run}' in capsys.readouterr().err
  first_image = sorted((study_dir / 'images').iterdir())[0]
  first_image.unlink()
  assert cli.turing(flags(run), args) == cli.EXIT_USAGE
  err = capsys.readouterr().err
  assert 'image(s) missing' in err and '--rebuild' in err and 'overwrite=True' not in err
  assert cli.turing(flags(run), args + ['--rebuild']) == 0
  assert cli.turing(flags(run), ['--pairs', '7', '--size', '32', '--study',
                                 str(tmp_path / 'big'), '--no-serve']) == cli.EXIT_USAGE
  assert '--data DIR' in capsys.readouterr().err


def test_turing_report_counts_only_study_folders(run, capsys):
  """A stray file beside the run's studies (.DS_Store, notes) is not taken for a study."""
  cli.turing(flags(run), ['--pairs', '4', '--size', '64', '--no-serve'])
  (run / 'turing' / '.DS_Store').write_bytes(b'\0')
  assert cli.turing_report(flags(run), []) == 0
  capsys.readouterr()


def test_ctrl_c_stops_the_server_quietly(run):
  """Ctrl-C on `launch.py turing` (the documented way to stop it) ends with exit 130 and a
  line saying the answers are kept, not asyncio's two tracebacks."""
  assert cli.turing(flags(run), ['--pairs', '4', '--size', '64', '--no-serve']) == 0
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.Popen(
      [sys.executable, 'launch.py', 'turing', '--workdir', str(run), '--pairs', '4', '--size',
       '64', '--port', '0'], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  try:
    while 'Results:' not in proc.stdout.readline():
      assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 130, err[-2000:]
  assert 'Traceback' not in err and 'answers are stored' in err


def test_a_photo_that_repeats_another_is_not_a_second_pair(run, tmp_path, capsys):
  """A --data folder holding one photo twice (a copy under another name): the copy is left
  out, with a note, so a study never shows the same real photo in two pairs."""
  folder = tmp_path / 'photos'
  folder.mkdir()
  for i in range(3):
    rgb = np.random.default_rng(70 + i).integers(0, 256, (40, 40, 3), np.uint8)
    Image.fromarray(rgb).save(folder / f'p{i}.png')
  (folder / 'p0_copy.png').write_bytes((folder / 'p0.png').read_bytes())
  assert cli.turing(flags(run), ['--pairs', '3', '--size', '32', '--data', str(folder),
                                 '--study', str(tmp_path / 'study'), '--no-serve']) == 0
  assert 'left out 1 photos that repeat others' in capsys.readouterr().err
  study = turing.load_study(tmp_path / 'study')
  assert sorted(p.photo_id for p in study.pairs) == ['p0.png', 'p1.png', 'p2.png']
  assert cli.turing(flags(run), ['--pairs', '4', '--size', '32', '--data', str(folder),
                                 '--study', str(tmp_path / 'study4'), '--no-serve']) == 2


def test_a_study_of_a_step_saved_again_since_is_not_served(run, tmp_path, capsys):
  """A study records which save of its step it colorized: after the run is retrained from
  an earlier step (the step saved anew, other weights), the old study is refused with
  --rebuild as the remedy, not served as 'the study of step N'."""
  from colorize_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from colorize_jax import steps  # pylint: disable=g-import-not-at-top
  copy = tmp_path / 'run'
  shutil.copytree(run, copy, ignore=shutil.ignore_patterns('turing', 'eval'))
  args = ['--pairs', '2', '--size', '32', '--no-serve']
  assert cli.turing(flags(copy), args) == 0
  config = checkpoints.load_config(copy)
  gan = steps.GAN.from_config(config)
  ckpts = checkpoints.Checkpoints(copy)
  state, meta = ckpts.restore(steps.abstract_state(gan, config.image_size), 3)
  ckpts.close()
  shutil.rmtree(copy / 'checkpoints' / '3')
  ckpts = checkpoints.Checkpoints(copy)
  ckpts.save(3, state, meta)
  ckpts.close()
  capsys.readouterr()
  assert cli.turing(flags(copy), args) == cli.EXIT_USAGE
  assert 'saved again since' in capsys.readouterr().err
  assert cli.turing(flags(copy), args + ['--rebuild']) == 0
