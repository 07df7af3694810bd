"""Tests of the experiment configs under experiments/."""

import glob
import os
import subprocess

from absl import flags
from ml_collections import config_flags
import pytest

from colorize_jax import models
from colorize_jax import steps
from experiments import default
from experiments import paper
from experiments import plot_run
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, 'experiments', '*.py'))
                      if 'def get_config(' in open(p, encoding='utf-8').read())


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


@pytest.mark.parametrize('module', [default, paper], ids=['default', 'paper'])
def test_paper_config_holds_the_papers_settings(module):
  """The default config, which experiments/paper.py names, has the paper's data, epochs,
  patch size and losses (sec. 3)."""
  config = module.get_config()
  assert config.data.source == 'places365_nature'
  assert (config.data.num_train, config.data.num_val) == (15_000, 3_000)
  assert config.num_epochs == 20 and config.image_size == 256
  assert config.keep_checkpoints is None
  # What the GAN built from it holds, not only the config's numbers: the PatchGAN's
  # 34x34 patches, the one-sided label smoothing, lambda = 100 and D's whole BCE.
  gan = steps.GAN.from_config(config)
  assert helpers.measured_receptive_field(gan.discriminator, size=96) == 34
  assert (gan.real_label, gan.l1_weight, gan.d_loss_scale) == (0.9, 100.0, 1.0)
  assert config.optim.g_learning_rate != config.optim.d_learning_rate


def test_config_files_are_found():
  names = {os.path.basename(p) for p in CONFIG_FILES}
  assert {'default.py', 'paper.py', 'quickstart.py', 'folder.py', 'photos_cpu.py'} <= names


def test_plot_run_reads_back_what_training_logs_and_draws_it(tmp_path):
  """plot_run reads the scalars the training loop writes (clu's TensorBoard writer),
  sorted by step, and saves the figure of RESULTS.md."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  writer = metric_writers.SummaryWriter(str(tmp_path))
  writer.write_scalars(20, {'train/g_l1': 0.5, 'train/d_loss': 0.7})
  writer.write_scalars(10, {'train/g_l1': 0.9, 'train/d_loss': 0.6})
  writer.write_scalars(30, {'val/psnr': 21.0, 'val/gray_psnr': 20.0})
  writer.close()
  series = plot_run.read_scalars(str(tmp_path))
  steps_, values = series['train/g_l1']
  assert steps_.tolist() == [10, 20]
  assert values.tolist() == pytest.approx([0.9, 0.5])
  assert series['val/gray_psnr'][1].tolist() == pytest.approx([20.0])
  with pytest.raises(FileNotFoundError):
    plot_run.read_scalars(str(tmp_path / 'nowhere'))
  pytest.importorskip('matplotlib')
  out = tmp_path / 'curves' / 'run.png'
  assert plot_run.main(['plot_run.py', str(tmp_path), str(out)]) == 0
  assert out.read_bytes().startswith(b'\x89PNG')


def test_paper_protocol_passes_its_flags_where_they_belong(tmp_path):
  """A first argument that is a flag is a train flag (it was taken for RUNS_DIR, so the
  override was lost and runs went to './--config...'); RUNS_DIR is the caller's relative
  path; SELECT_FLAGS reach the final select (offline, it could not be given weights)."""
  log = tmp_path / 'calls.log'
  stub = tmp_path / 'python'
  stub.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
  stub.chmod(0o755)
  script = os.path.join(ROOT, 'experiments', 'paper_protocol.sh')
  env = dict(os.environ, PYTHON=str(stub), SELECT_FLAGS='--inception-weights w.h5')
  subprocess.run(['bash', script, '--config.batch_size=32'], cwd=tmp_path, env=env,
                 check=True, timeout=60)
  calls = log.read_text().splitlines()
  assert len(calls) == 5
  for seed, call in enumerate(calls[:4]):
    assert f'--workdir {tmp_path}/runs/paper/run{seed} --config.seed={seed} ' \
           '--config.batch_size=32' in call, call
  assert calls[4].startswith('launch.py select') and calls[4].endswith(
      f'--out {tmp_path}/runs/paper/selection --inception-weights w.h5')
  log.unlink()
  subprocess.run(['bash', script, 'mine'], cwd=tmp_path, env=dict(env, SELECT_FLAGS=''),
                 check=True, timeout=60)
  calls = log.read_text().splitlines()
  assert f'--workdir {tmp_path}/mine/run0 ' in calls[0] + ' '
  assert calls[4].endswith(f'--out {tmp_path}/mine/selection')


def test_plot_run_reads_a_cut_event_file_and_refuses_a_missing_run(tmp_path, capsys):
  """An event file cut mid-record (a killed run, a full disk) is plotted up to the cut
  with a warning (it raised DataLossError and drew nothing); a folder without events is
  an error line and exit 2 (it was a traceback)."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  writer = metric_writers.SummaryWriter(str(tmp_path))
  for step in (10, 20, 30):
    writer.write_scalars(step, {'train/g_l1': step / 100})
  writer.close()
  (path,) = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  with open(path, 'rb+') as f:
    f.truncate(os.path.getsize(path) - 7)
  series = plot_run.read_scalars(str(tmp_path))
  assert series['train/g_l1'][0].tolist() == [10, 20]
  assert 'cut short' in capsys.readouterr().err
  assert plot_run.main(['plot_run.py', str(tmp_path / 'nowhere'), str(tmp_path / 'x.png')]) == 2
  assert 'error: no TensorBoard event files' in capsys.readouterr().err
