"""End-to-end tests of the training loop: checkpoints, samples, events, resume, signals, NaN."""

import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from colorize_jax import checkpoints
from colorize_jax import steps
from colorize_jax import train
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, BATCH = 12, 4
STEPS_PER_EPOCH = NUM_TRAIN // BATCH
tiny_config = helpers.tiny_config


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  return helpers.make_photo_folder(tmp_path_factory.mktemp('photos'), NUM_TRAIN, 3)


def _params(state):
  return jax.tree.map(np.asarray, (state.generator, state.discriminator, state.step))


@pytest.fixture(scope='module')
def uninterrupted(photos, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  state = train.train_and_evaluate(tiny_config(photos), str(workdir))
  return workdir, _params(state)


def test_two_epochs_write_checkpoints_samples_and_events(uninterrupted):
  """A 2-epoch run leaves one checkpoint per epoch, a sample grid per epoch, TensorBoard
  events with train and validation scalars, and its config."""
  workdir, _ = uninterrupted
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  assert ckpts.all_steps() == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
  meta = ckpts.read_meta(2 * STEPS_PER_EPOCH)
  assert meta['epoch'] == 2 and meta['epoch_end']
  assert {'psnr', 'ab_mae', 'gray_psnr', 'd_fake_prob'} <= set(meta['val'])
  grids = sorted(p.name for p in (workdir / 'samples').iterdir())
  assert grids == ['epoch_001.png', 'epoch_002.png']
  grid = np.asarray(Image.open(workdir / 'samples' / 'epoch_002.png'))
  assert grid.shape[0] > 2 * 32 and grid.shape[1] > 3 * 32  # 2 rows x (gray|fake|real)
  tags = set()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for event_file in workdir.glob('events.out.tfevents.*'):
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      tags.update(v.tag for v in event.summary.value)
  assert {'train/g_l1', 'train/d_loss', 'val/psnr', 'val/gray_psnr'} <= tags
  assert any(t.startswith('samples/') for t in tags)
  assert checkpoints.load_config(workdir).model.width == 4


def _logged(workdir):
  """[(tag, step)] of every scalar and image value in the run's event files."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  logged = []
  for event_file in sorted(workdir.glob('events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      logged.extend((v.tag, event.step) for v in event.summary.value)
  return logged


def test_a_resumed_run_logs_each_step_once(photos, uninterrupted, tmp_path):
  """A run killed after logging past its last checkpoint (here: epoch 2 logged, its
  checkpoint lost) is resumed with each step's values in TensorBoard once, the resumed
  run's (the killed run's second copy made a zigzag), and a record cut short by the kill
  does not stop the event files from being read."""
  workdir, _ = uninterrupted
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  before = _logged(copy)
  assert any(step > STEPS_PER_EPOCH for _, step in before)
  shutil.rmtree(copy / 'checkpoints' / str(2 * STEPS_PER_EPOCH))
  with open(sorted(copy.glob('events.out.tfevents.*'))[-1], 'ab') as f:
    f.write(b'\x40\x00\x00')   # the start of a record the kill cut off
  train.train_and_evaluate(tiny_config(photos), str(copy))
  after = _logged(copy)
  assert len(after) == len(set(after))
  assert sorted(set(after)) == sorted(set(before))


def _interrupt_after(monkeypatch, num_batches):
  """Makes SIGTERM arrive while the train step of batch `num_batches` runs."""
  real = train.input_pipeline.train_batches
  delivered = {'count': 0}

  def batches(*args, **kwargs):
    for batch in real(*args, **kwargs):
      delivered['count'] += 1
      if delivered['count'] == num_batches:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(train.input_pipeline, 'train_batches', batches)


def test_interrupted_and_resumed_run_equals_uninterrupted(photos, uninterrupted, tmp_path,
                                                          monkeypatch):
  """SIGTERM mid-epoch saves a checkpoint and exits cleanly; running the same command
  again ends with bitwise the parameters of an uninterrupted run (dropout, data order,
  augmentation and Adam state all resume)."""
  _, expected = uninterrupted
  stop_at = STEPS_PER_EPOCH + 1  # in the middle of epoch 2
  with monkeypatch.context() as patch:
    _interrupt_after(patch, stop_at)
    with pytest.raises(train.Interrupted) as interrupted:
      train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  assert interrupted.value.step == stop_at and interrupted.value.signum == signal.SIGTERM
  assert checkpoints.Checkpoints(tmp_path, read_only=True).all_steps() == [
      STEPS_PER_EPOCH, stop_at]
  resumed = train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, _params(resumed), expected)


def test_run_extended_by_more_epochs_equals_a_longer_run(photos, uninterrupted, tmp_path):
  """Training 1 epoch, then rerunning with num_epochs=2, equals training 2 epochs at once."""
  _, expected = uninterrupted
  train.train_and_evaluate(tiny_config(photos, num_epochs=1), str(tmp_path))
  resumed = train.train_and_evaluate(tiny_config(photos, num_epochs=2), str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, _params(resumed), expected)


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(photos, tmp_path):
  """A diverging run raises a clear error, saves nothing new, and its latest checkpoint
  still holds finite parameters."""
  train.train_and_evaluate(tiny_config(photos, num_epochs=1), str(tmp_path))
  diverging = tiny_config(photos)
  diverging.optim.g_learning_rate = 1e30
  diverging.optim.d_learning_rate = 1e30
  with pytest.raises(train.NonFiniteLossError, match='NaN or infinite'):
    train.train_and_evaluate(diverging, str(tmp_path))
  ckpts = checkpoints.Checkpoints(tmp_path, read_only=True)
  assert ckpts.all_steps() == [STEPS_PER_EPOCH]
  gan = steps.GAN.from_config(tiny_config(photos))
  state, _ = ckpts.restore(steps.abstract_state(gan, 32, jax.sharding.SingleDeviceSharding(
      jax.devices()[0])))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(_params(state)))


# orbax's reader leaves a TensorStore callback for its closed event loop when a read fails.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_damaged_latest_checkpoint_says_how_to_resume_from_the_one_before(
    photos, uninterrupted, tmp_path):
  """Resuming over a damaged latest checkpoint names it and the way on: moving it aside
  (which the error names) resumes from the one before, to the same weights."""
  workdir, expected = uninterrupted
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  latest = copy / 'checkpoints' / str(2 * STEPS_PER_EPOCH)
  helpers.damage_checkpoint(latest)
  with pytest.raises(checkpoints.CorruptCheckpoint,
                     match=f'move {re.escape(str(latest))} out of that folder'):
    train.train_and_evaluate(tiny_config(photos), str(copy))
  shutil.move(latest, tmp_path / 'aside')
  resumed = train.train_and_evaluate(tiny_config(photos), str(copy))
  jax.tree.map(np.testing.assert_array_equal, _params(resumed), expected)


def test_resume_with_a_different_architecture_is_refused(photos, uninterrupted):
  """Resuming a workdir with other model settings or batch size is a clear error, and so is
  another data.samples_per_epoch (it was a warning, then 'steps per epoch changed: the
  dataset or batch size changed', which neither had)."""
  workdir, _ = uninterrupted
  changed = tiny_config(photos)
  changed.model.width = 8
  with pytest.raises(ValueError, match='model.width'):
    train.train_and_evaluate(changed, str(workdir))
  changed = tiny_config(photos)
  changed.data.samples_per_epoch = 4
  with pytest.raises(ValueError, match=r'data.samples_per_epoch: None -> 4'):
    train.train_and_evaluate(changed, str(workdir))


def test_sigterm_to_the_launcher_saves_and_exits_cleanly(photos, tmp_path):
  """`launch.py train` killed with SIGTERM while training writes a checkpoint and exits
  with status 128 + 15, without a traceback."""
  cmd = [sys.executable, os.path.join(ROOT, 'launch.py'), 'train',
         f'--config={os.path.join(ROOT, "experiments", "default.py")}',
         f'--workdir={tmp_path}', *helpers.tiny_flags(photos, num_epochs=100_000),
         '--config.log_every_steps=1']
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  lines = []
  for line in proc.stdout:  # wait until training has taken steps
    lines.append(line)
    if 'img/s' in line or '/s]' in line:
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  lines.append(out)
  log = ''.join(lines)
  assert proc.returncode == 128 + signal.SIGTERM, log
  assert 'Traceback' not in log
  assert 'Run the same command to resume' in log
  assert checkpoints.Checkpoints(tmp_path, read_only=True).all_steps()


def test_a_run_that_fails_after_an_epoch_still_finishes_that_epochs_checkpoint(
    photos, tmp_path, monkeypatch):
  """Whatever stops a run (here unreadable data at the start of epoch 2), the checkpoint
  the epoch before started saving in the background is finished before the error leaves
  train_and_evaluate: a process that exits right after keeps it."""
  real = train.input_pipeline.train_batches

  def failing(*args, epoch, **kwargs):
    if epoch == 1:
      raise train.input_pipeline.DataReadError('the photos went away')
    return real(*args, epoch=epoch, **kwargs)

  closed = []
  close = checkpoints.Checkpoints.close
  monkeypatch.setattr(checkpoints.Checkpoints, 'close',
                      lambda self: (close(self), closed.append(self.all_steps())))
  monkeypatch.setattr(train.input_pipeline, 'train_batches', failing)
  with pytest.raises(train.input_pipeline.DataReadError):
    train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  assert closed == [[STEPS_PER_EPOCH]]
  assert checkpoints.Checkpoints(tmp_path, read_only=True).all_steps() == [STEPS_PER_EPOCH]


def _keep_one(config):
  config.keep_checkpoints = 1
  return config


def test_refused_relaunches_change_nothing_and_a_finished_run_is_left_alone(
    photos, uninterrupted, tmp_path_factory):
  """A relaunch refused because the data changed leaves the run's config.json as it was;
  a relaunch of a finished run (or one asking for fewer epochs) trains nothing and keeps
  its config; neither deletes a checkpoint, even asking to keep fewer (retention ran as
  the refused relaunch closed, and deleted epoch 1's)."""
  workdir, expected = uninterrupted
  before = (workdir / checkpoints.CONFIG_FILE).read_text()
  fewer = helpers.make_photo_folder(tmp_path_factory.mktemp('fewer'), 8, 3)
  with pytest.raises(ValueError, match='data.folder'):
    train.train_and_evaluate(_keep_one(tiny_config(fewer)), str(workdir))
  assert (workdir / checkpoints.CONFIG_FILE).read_text() == before
  for num_epochs in (2, 1):
    state = train.train_and_evaluate(_keep_one(tiny_config(photos, num_epochs=num_epochs)),
                                     str(workdir))
    jax.tree.map(np.testing.assert_array_equal, _params(state), expected)
  assert (workdir / checkpoints.CONFIG_FILE).read_text() == before
  assert checkpoints.Checkpoints(workdir, read_only=True).all_steps() == [
      STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]


def test_bad_workdirs_and_configs_are_refused_before_anything_is_written(photos, tmp_path):
  """A workdir that is a file, one another training holds, keep_checkpoints=0 (which would
  keep nothing), negative sample counts, a crop_scale that is not 0 < lo <= hi <= 1 and an
  epoch smaller than one batch are clear errors; a failed start leaves no config behind to
  lock the workdir, and a new run refused leaves no folders or lock file it made."""
  import fcntl  # pylint: disable=g-import-not-at-top
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(ValueError, match='Cannot write the run'):
    train.train_and_evaluate(tiny_config(photos), str(tmp_path / 'a_file'))
  busy = tmp_path / 'busy'
  busy.mkdir()
  with open(busy / train.LOCK_FILE, 'a') as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(ValueError, match='Another training process'):
      train.train_and_evaluate(tiny_config(photos), str(busy))
  for field, value, message in (('keep_checkpoints', 0, 'keep_checkpoints'),
                                ('num_sample_images', -1, 'num_sample_images')):
    config = tiny_config(photos)
    config[field] = value
    with pytest.raises(ValueError, match=message):
      train.train_and_evaluate(config, str(tmp_path / field))
  for scale in ((0.5,), (0.0, 1.0), (0.9, 0.5)):   # checked even with random_resized_crop off
    config = tiny_config(photos)
    config.data.random_resized_crop = False
    config.data.crop_scale = scale
    with pytest.raises(ValueError, match='crop_scale'):
      train.train_and_evaluate(config, str(tmp_path / 'crop'))
  assert not (tmp_path / 'crop' / checkpoints.CONFIG_FILE).exists()
  big = tmp_path / 'big_batch'
  with pytest.raises(ValueError, match='smaller than one batch'):
    train.train_and_evaluate(tiny_config(photos, batch_size=64), str(big))
  assert not big.exists()   # the new run's folders and lock file are gone again
  made_by_user = tmp_path / 'empty_folder'
  made_by_user.mkdir()
  with pytest.raises(ValueError, match='smaller than one batch'):
    train.train_and_evaluate(tiny_config(photos, batch_size=64), str(made_by_user))
  assert made_by_user.is_dir() and not os.listdir(made_by_user)


def test_more_bad_values_are_refused_before_the_workdir_is_made(photos, tmp_path):
  """A seed beyond 64 bits (was JAX's OverflowError), a PatchGAN too deep for the image size
  (was a layer's shape error after the data scan), an infinite learning rate (was a NaN
  loss at step 1), negative dropout levels (were taken silently) and a val_fraction that
  leaves no training photos (was 'no usable images') are named before anything is written."""
  for field, value, message in (
      ('seed', 2**63, 'seed must be a 64-bit integer'),
      ('model.disc_layers', 4, 'disc_layers=4 is too deep for image_size 32.*at most 3'),
      ('model.disc_layers', 0, 'disc_layers must be >= 1'),
      ('image_size', 8, 'power of two'),   # not "disc_layers too deep" for a size that is none
      ('optim.g_learning_rate', float('inf'), 'g_learning_rate must be finite'),
      ('model.num_dropout_levels', -2, 'num_dropout_levels must be >= 0'),
      ('data.val_fraction', 0.999, 'val_fraction=0.999 puts all')):
    config = tiny_config(photos)
    *parents, name = field.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
    if field == 'data.val_fraction':   # a flat folder: no train/ and val/
      flat = tmp_path / 'flat'
      flat.mkdir(exist_ok=True)
      for i in range(4):
        Image.fromarray(np.full((8, 8, 3), (60 * i, 80, 120), np.uint8)).save(flat / f'{i}.png')
      config.data.folder = str(flat)
    workdir = tmp_path / 'run'
    with pytest.raises(ValueError, match=message):
      train.train_and_evaluate(config, str(workdir))
    assert not workdir.exists(), field


def test_an_unknown_config_field_is_a_clear_flag_error(photos, tmp_path):
  """`--config.batchsize=4` (a typo) fails flag parsing with ml_collections' suggestion,
  not a traceback; a field with no near name is named with its flag (it was "'foo'")."""
  for override, says in (('--config.batchsize=4', 'Did you mean "batch_size"'),
                         ('--config.model.foo=1',
                          "the config has no field 'foo' (--config.model.foo)")):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'launch.py'), 'train',
         f'--config={os.path.join(ROOT, "experiments", "default.py")}', f'--workdir={tmp_path}',
         override], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2   # a usage error
    assert says in result.stderr
    assert 'Traceback' not in result.stderr


class _Scalars:
  def __init__(self):
    self.written = []

  def write_scalars(self, step, scalars):
    self.written.append((step, scalars))


@pytest.mark.parametrize('d_loss,g_adversarial,warned', [
    (0.7, 1.2, False), (3e12, 0.5, True), (0.5, 80.0, True)])
def test_a_diverged_run_is_said_in_the_log(caplog, d_loss, g_adversarial, warned):
  """Finite but exploding adversarial losses (learning rates of 1e6 give 1e12-3e13 without
  a NaN) are logged as a divergence with the step and the losses; healthy ones are not.
  The metrics are written either way."""
  import logging  # pylint: disable=g-import-not-at-top
  count = 4
  sums = {k: np.float32(v * count) for k, v in
          {'d_loss': d_loss, 'g_adversarial': g_adversarial, 'g_l1': 0.2, 'nonfinite': 0.0}.items()}
  writer = _Scalars()
  with caplog.at_level(logging.WARNING):
    means = train._log_train_metrics(writer, 100, sums, count)
  said = [r.getMessage() for r in caplog.records if 'diverged' in r.getMessage()]
  assert bool(said) == warned
  if warned:
    assert 'step 100' in said[0] and ('d_loss' in said[0]) == (d_loss > 50)
  assert writer.written == [(100, {f'train/{k}': v for k, v in means.items()})]


def test_a_second_sigterm_during_the_save_cannot_lose_it(photos, tmp_path, monkeypatch):
  """SIGTERM again while the interruption checkpoint is being saved (a wrapper forwarding
  signals twice) is logged and ignored: the checkpoint reaches the disk and the run ends
  as stopped by SIGTERM (it once raised KeyboardInterrupt inside orbax's save, which left
  no checkpoint at all)."""
  stop_at = 1
  real_save = checkpoints.Checkpoints.save

  def save_signalled_twice(self, step, state, meta):
    os.kill(os.getpid(), signal.SIGTERM)
    real_save(self, step, state, meta)
    os.kill(os.getpid(), signal.SIGTERM)

  _interrupt_after(monkeypatch, stop_at)
  monkeypatch.setattr(checkpoints.Checkpoints, 'save', save_signalled_twice)
  with pytest.raises(train.Interrupted) as interrupted:
    train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  assert interrupted.value.signum == signal.SIGTERM and interrupted.value.step == stop_at
  assert checkpoints.Checkpoints(tmp_path, read_only=True).all_steps() == [stop_at]


def test_a_run_without_validation_images_trains_and_saves(tmp_path):
  """An empty val/ (or val_fraction 0) leaves validation without images: the epoch's
  checkpoint is saved, with no sample grid (an empty grid once crashed the run after its
  first epoch, before anything was saved)."""
  photos = helpers.make_photo_folder(tmp_path / 'photos', NUM_TRAIN, 0)
  train.train_and_evaluate(tiny_config(photos, num_epochs=1), str(tmp_path / 'run'))
  assert checkpoints.Checkpoints(tmp_path / 'run', read_only=True).all_steps() == [
      STEPS_PER_EPOCH]
  assert not (tmp_path / 'run' / 'samples').exists()


def test_a_validation_read_error_keeps_the_epoch_it_ends(photos, uninterrupted, tmp_path,
                                                        monkeypatch):
  """A validation image that can no longer be read stops the run with a DataReadError
  after saving the epoch's training (as a checkpoint that a rerun validates; the whole
  epoch was once lost), and the rerun ends bitwise where an uninterrupted run does."""
  _, expected = uninterrupted
  real = train.input_pipeline.val_batches

  def damaged(*args, **kwargs):
    raise train.input_pipeline.DataReadError('Reading the validation images failed')
    yield from real(*args, **kwargs)  # pylint: disable=unreachable

  with monkeypatch.context() as patch:
    patch.setattr(train.input_pipeline, 'val_batches', damaged)
    with pytest.raises(train.input_pipeline.DataReadError, match='validation images'):
      train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  ckpts = checkpoints.Checkpoints(tmp_path, read_only=True)
  assert ckpts.all_steps() == [STEPS_PER_EPOCH]
  assert not ckpts.read_meta(STEPS_PER_EPOCH)['epoch_end']
  resumed = train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, _params(resumed), expected)


def test_signals_during_an_epochs_save_cannot_cut_it_short(photos, tmp_path, monkeypatch):
  """SIGTERM twice while an epoch's checkpoint is being saved (a scheduler repeating
  itself): the save completes, the run stops with Interrupted and the epoch is kept (the
  second signal raised KeyboardInterrupt inside orbax's save, losing the epoch)."""
  real = checkpoints.Checkpoints.save

  def save_while_signalled(self, step, state, meta):
    if meta.get('epoch_end'):
      os.kill(os.getpid(), signal.SIGTERM)
      os.kill(os.getpid(), signal.SIGTERM)
    return real(self, step, state, meta)

  monkeypatch.setattr(checkpoints.Checkpoints, 'save', save_while_signalled)
  with pytest.raises(train.Interrupted):
    train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  ckpts = checkpoints.Checkpoints(tmp_path, read_only=True)
  assert ckpts.all_steps() == [STEPS_PER_EPOCH] and ckpts.is_epoch_end(STEPS_PER_EPOCH)


def test_a_run_records_its_photos_absolutely_and_refuses_other_ones(tmp_path, monkeypatch):
  """A relative data folder is stored absolute (evaluate, select and resumes run from other
  folders); resuming with another folder, or after the photos under it were added, removed
  or renamed (same number of steps), or one replaced by another of its name and another
  size, is refused: it would train on other photos."""
  helpers.make_photo_folder(tmp_path / 'photos', NUM_TRAIN, 3)
  shutil.copytree(tmp_path / 'photos', tmp_path / 'other')
  monkeypatch.chdir(tmp_path)
  config = tiny_config('photos', num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert checkpoints.load_config(tmp_path / 'run').data.folder == str(tmp_path / 'photos')
  assert config.data.folder == 'photos'   # the caller's config is left as it was
  longer = tiny_config(tmp_path / 'other', num_epochs=2)
  with pytest.raises(ValueError, match='data.folder'):
    train.train_and_evaluate(longer, str(tmp_path / 'run'))
  train_dir = tmp_path / 'photos' / 'train'
  first = sorted(train_dir.iterdir())[0]
  first.rename(train_dir / ('renamed_' + first.name))
  with pytest.raises(ValueError, match='images of .* changed'):
    train.train_and_evaluate(tiny_config(tmp_path / 'photos', num_epochs=2), str(tmp_path / 'run'))
  # Renamed back, then replaced by another photo under the same name: refused too.
  (train_dir / ('renamed_' + first.name)).rename(first)
  other_photo = sorted(train_dir.iterdir())[1]
  assert other_photo.stat().st_size != first.stat().st_size
  shutil.copyfile(other_photo, first)
  with pytest.raises(ValueError, match='replaced since it was trained'):
    train.train_and_evaluate(tiny_config(tmp_path / 'photos', num_epochs=2), str(tmp_path / 'run'))
