"""Tests of a run's checkpoints: full and partial restore."""

import gc
import shutil

import jax
import numpy as np
import pytest

from colorize_jax import checkpoints
from colorize_jax import steps
from experiments import default
from tests import helpers

IMAGE_SIZE = 32


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A tiny GAN's state saved as checkpoints 1 and 2 (2: generator params doubled); (dir, gan,
  state)."""
  config = default.get_config()
  config.image_size = IMAGE_SIZE
  config.model.width = 4
  gan = steps.GAN.from_config(config)
  state = gan.init(jax.random.PRNGKey(0), IMAGE_SIZE)
  # Adam states that differ from zero, so that a restore that mixed them up would show.
  state = state.replace(generator=state.generator.replace(
      opt_state=jax.tree.map(lambda x: x + 1, state.generator.opt_state)))
  workdir = tmp_path_factory.mktemp('run')
  ckpts = checkpoints.Checkpoints(workdir)
  ckpts.save(1, state, {'epoch': 1})
  doubled = state.generator.replace(params=jax.tree.map(lambda p: 2 * p, state.generator.params))
  ckpts.save(2, state.replace(generator=doubled), {'epoch': 2})
  ckpts.close()
  return workdir, gan, state


def _weights(abstract_net):
  return {'params': abstract_net.params, 'batch_stats': abstract_net.batch_stats}


def test_restore_subtree_reads_the_saved_weights_only(saved):
  """A partial restore returns the saved params and batch statistics, bitwise, and nothing else:
  no optimizer state is read."""
  workdir, gan, state = saved
  abstract = steps.abstract_state(gan, IMAGE_SIZE)
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  tree, meta = ckpts.restore_subtree({'generator': _weights(abstract.generator)}, step=1)
  ckpts.close()
  assert meta == {'epoch': 1}
  assert set(tree) == {'generator'} and set(tree['generator']) == {'params', 'batch_stats'}
  jax.tree.map(np.testing.assert_array_equal, tree['generator'],
               {'params': state.generator.params, 'batch_stats': state.generator.batch_stats})
  restored_bytes = sum(x.nbytes for x in jax.tree.leaves(tree))
  full_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
  assert restored_bytes == sum(x.nbytes for x in jax.tree.leaves(state.generator.variables))
  assert restored_bytes < full_bytes / 3   # no Adam moments, no discriminator


def test_restore_subtree_on_the_manager_that_saved(saved, tmp_path):
  """Partial and full restores work on the Checkpoints object that saved, in either order, with
  the latest step by default."""
  _, gan, state = saved
  abstract = steps.abstract_state(gan, IMAGE_SIZE)
  ckpts = checkpoints.Checkpoints(tmp_path)
  ckpts.save(3, state, {'epoch': 3})
  ckpts.wait()
  tree, _ = ckpts.restore_subtree({'discriminator': _weights(abstract.discriminator),
                                   'step': abstract.step})
  full, _ = ckpts.restore(abstract, 3)
  again, _ = ckpts.restore_subtree({'discriminator': _weights(abstract.discriminator)}, 3)
  ckpts.close()
  jax.tree.map(np.testing.assert_array_equal, tree['discriminator'], full.discriminator.variables)
  jax.tree.map(np.testing.assert_array_equal, again, {'discriminator': tree['discriminator']})
  assert int(tree['step']) == int(state.step)


def test_restore_subtree_of_a_later_step_and_bad_requests(saved):
  """The requested step is the one read; a missing step or a part the checkpoint lacks is a clear
  error, not an abstract value passed off as restored."""
  workdir, gan, state = saved
  abstract = steps.abstract_state(gan, IMAGE_SIZE)
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  latest, meta = ckpts.restore_subtree({'generator': {'params': abstract.generator.params}})
  assert meta['epoch'] == 2
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, 2 * np.asarray(b)),
               latest['generator']['params'], state.generator.params)
  with pytest.raises(FileNotFoundError, match='saved steps'):
    ckpts.restore_subtree({'step': abstract.step}, step=7)
  with pytest.raises(ValueError, match='weights'):
    ckpts.restore_subtree({'generator': {'weights': abstract.generator.params}}, step=1)
  ckpts.close()


# orbax's reader leaves a TensorStore callback for its closed event loop when a read fails.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('how', ['truncate', 'flip'])
def test_a_damaged_checkpoint_is_a_clear_error_naming_it_and_the_others(saved, tmp_path, how):
  """Damaged data files (a disk that filled up, a bad copy) raise CorruptCheckpoint, a
  ValueError naming the step and the steps still saved, from a full and a partial restore,
  not whatever TensorStore raised; config.json that is not JSON names itself."""
  workdir, gan, _ = saved
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  helpers.damage_checkpoint(copy / 'checkpoints' / '2', how)
  abstract = steps.abstract_state(gan, IMAGE_SIZE)
  ckpts = checkpoints.Checkpoints(copy, read_only=True)
  with pytest.raises(checkpoints.CorruptCheckpoint, match=r'Checkpoint 2 .*Other saved steps: \[1\]'):
    ckpts.restore(abstract, step=2)
  with pytest.raises(checkpoints.CorruptCheckpoint, match='Checkpoint 2'):
    ckpts.restore_subtree({'generator': _weights(abstract.generator)}, step=2)
  ckpts.restore_subtree({'generator': _weights(abstract.generator)}, step=1)   # still fine
  ckpts.close()
  (copy / checkpoints.CONFIG_FILE).write_text('{"image_size": 3')
  with pytest.raises(checkpoints.CorruptCheckpoint, match='config.json'):
    checkpoints.load_config(copy)


def test_retention_keeps_epochs_and_drops_superseded_interruption_checkpoints(saved, tmp_path):
  """A checkpoint saved on an interruption (meta epoch_end False) goes once a later
  epoch's checkpoint is on disk, never before; keep=N keeps the latest N epochs'
  checkpoints, and an interruption checkpoint does not count among them (it used to
  push out an epoch's checkpoint)."""
  _, _, state = saved
  for keep, expected in ((None, [3, 6, 9]), (2, [6, 9]), (1, [9])):
    ckpts = checkpoints.Checkpoints(tmp_path / f'keep_{keep}', keep=keep)
    ckpts.save(3, state, {'epoch': 1, 'epoch_end': True})
    ckpts.save(6, state, {'epoch': 2, 'epoch_end': True})
    ckpts.save(7, state, {'epoch': 2, 'epoch_end': False})   # interrupted in epoch 3
    ckpts.wait()
    assert 7 in ckpts.all_steps()   # the newest state: kept to resume from
    ckpts.save(9, state, {'epoch': 3, 'epoch_end': True})
    ckpts.close()
    assert checkpoints.Checkpoints(tmp_path / f'keep_{keep}', read_only=True).all_steps() == (
        expected), keep
  with pytest.raises(ValueError, match='keep'):
    checkpoints.Checkpoints(tmp_path / 'keep_0', keep=0)


def test_an_epochs_checkpoint_replacing_its_interruption_checkpoint_never_loses_it(
    saved, tmp_path, monkeypatch):
  """An interruption checkpoint at an epoch's last step (its validation was cut short)
  is replaced by that step's epoch-end checkpoint once validated. It is set aside, not
  deleted, until the new one is complete: a run killed in between (here: the save fails
  before writing) finds it back at the next start (it was deleted first, and such a kill
  restarted the run from step 0); a complete save removes it."""
  _, _, state = saved
  ckpts = checkpoints.Checkpoints(tmp_path / 'run')
  ckpts.save(5, state, {'epoch': 1, 'epoch_end': False})
  ckpts.close()

  ckpts = checkpoints.Checkpoints(tmp_path / 'run')
  def killed(*args, **kwargs):
    raise KeyboardInterrupt   # the process dies here, its save not begun
  monkeypatch.setattr(ckpts._manager, 'save', killed)
  with pytest.raises(KeyboardInterrupt):
    ckpts.save(5, state, {'epoch': 1, 'epoch_end': True})
  monkeypatch.undo()
  assert ckpts.all_steps() == []

  ckpts = checkpoints.Checkpoints(tmp_path / 'run')
  assert ckpts.all_steps() == [5] and not ckpts.is_epoch_end(5)
  ckpts.save(5, state, {'epoch': 1, 'epoch_end': True})
  ckpts.close()
  ckpts = checkpoints.Checkpoints(tmp_path / 'run', read_only=True)
  assert ckpts.all_steps() == [5] and ckpts.is_epoch_end(5)
  assert sorted(p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir()) == ['5']


def test_what_a_killed_save_or_delete_left_is_removed_by_the_next_training(saved, tmp_path,
                                                                          monkeypatch):
  """A deleted checkpoint goes through a trash folder (renamed, then removed: a delete
  cut short leaves no half checkpoint among the steps, which `select` then called
  damaged), and the next writable open removes the trash and the temporary folder of a
  save that was killed (it stayed for ever unless its step was saved again)."""
  workdir, _, _ = saved
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  folder = copy / 'checkpoints'
  (folder / '.deleted' / '0' / 'state').mkdir(parents=True)   # a delete cut short
  shutil.copytree(folder / '2', folder / '7.orbax-checkpoint-tmp')   # a save cut short
  assert checkpoints.Checkpoints(copy, read_only=True).all_steps() == [1, 2]
  assert (folder / '7.orbax-checkpoint-tmp').exists()   # readers leave it alone
  ckpts = checkpoints.Checkpoints(copy, keep=1)
  assert sorted(p.name for p in folder.iterdir()) == ['1', '2']
  with monkeypatch.context() as patch:   # a kill before the trash is emptied
    patch.setattr(checkpoints.shutil, 'rmtree', lambda *args, **kwargs: None)
    ckpts._prune()   # keep=1 deletes step 1
  assert sorted(p.name for p in folder.iterdir()) == ['.deleted', '2']
  assert ckpts.all_steps() == [2]
  ckpts.close()
  checkpoints.Checkpoints(copy, keep=1).close()
  assert sorted(p.name for p in folder.iterdir()) == ['2']


def test_a_checkpoint_missing_a_file_never_blocks_later_saves(saved, tmp_path):
  """An older step folder that lost a file (its delete killed half way) is damaged, not
  missing: retention leaves it for a person, and the next epoch's checkpoint is saved (the
  FileNotFoundError once escaped retention and failed every later save)."""
  workdir, _, state = saved
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  (copy / 'checkpoints' / '1' / 'meta' / 'metadata').unlink()
  ckpts = checkpoints.Checkpoints(copy, keep=1)
  with pytest.raises(checkpoints.CorruptCheckpoint, match='Checkpoint 1 .*metadata'):
    ckpts.read_meta(1)
  ckpts.save(3, state, {'epoch': 3})
  ckpts.close()
  assert checkpoints.Checkpoints(copy, read_only=True).all_steps() == [1, 3]


def test_a_failed_background_save_is_a_save_error_saying_what_is_kept(saved, tmp_path,
                                                                      monkeypatch):
  """TensorStore reports a full disk from the background write as a ValueError, seen at
  the next wait or check: both raise SaveError (an OSError) naming the step that failed
  and the checkpoints still intact."""
  workdir, _, state = saved
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  ckpts = checkpoints.Checkpoints(copy)
  ckpts.save(3, state, {'epoch': 3})
  ckpts.wait()
  full = ValueError('RESOURCE_EXHAUSTED: Failed to write: No space left on device')
  for method in ('wait_until_finished', 'check_for_errors'):
    monkeypatch.setattr(ckpts._manager, method, lambda e=full: (_ for _ in ()).throw(e))
  for call in (ckpts.wait, ckpts.check):
    with pytest.raises(checkpoints.SaveError,
                       match=r'Checkpoint 3 could not be written .*No space left.*intact \(\[1, 2\]\)'):
      call()
  monkeypatch.undo()
  ckpts.close()


# orbax's reader leaves a TensorStore callback for its closed event loop when a read fails.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_checkpoint_of_another_architecture_is_not_called_damaged(saved):
  """Restoring into a model of another width (a config.json lost or edited) says the
  shapes differ, naming an array, in a full and a partial restore (the partial one once
  handed back the stored shapes without a word); it is not a CorruptCheckpoint, which
  would invite deleting a good checkpoint."""
  workdir, _, _ = saved
  config = default.get_config()
  config.image_size = IMAGE_SIZE
  config.model.width = 8
  wider = steps.abstract_state(steps.GAN.from_config(config), IMAGE_SIZE)
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  for restore in (lambda: ckpts.restore(wider, step=1),
                  lambda: ckpts.restore_subtree({'generator': _weights(wider.generator)}, 1)):
    with pytest.raises(ValueError, match='other shapes than this model') as raised:
      restore()
    assert not isinstance(raised.value, checkpoints.CorruptCheckpoint)
  ckpts.close()
  gc.collect()   # the failed reads' leftovers are reported here, under the filter above
