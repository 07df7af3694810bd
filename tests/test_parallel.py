"""Data-parallel training: equal results on 1 and 4 devices, 2 processes, portable checkpoints.

Device counts are fixed when JAX starts, so the multi-device sides run in
subprocesses (tests/multidevice_worker.py, or launch.py for the 2-process run).
"""

import functools
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from colorize_jax import checkpoints
from colorize_jax import parallel
from colorize_jax import steps
from colorize_jax import train
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Sums over the batch run in another order on other device counts: the same function
# up to float32 rounding, not to the bit.
assert_close = functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-6)


def run(args, **kwargs):
  proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, **kwargs)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return proc


def worker(*args, num_cpu_devices=4):
  run([sys.executable, '-m', 'tests.multidevice_worker', *map(str, args)],
      env=dict(os.environ, NUM_CPU_DEVICES=str(num_cpu_devices)))


def flat(state) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(parallel.fetch(state))[0]
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


def restore_here(workdir, photos, step=None) -> dict[str, np.ndarray]:
  """Restores a run's checkpoint on this process's single device."""
  gan = steps.GAN.from_config(helpers.tiny_config(photos))
  sharding = parallel.replicated(parallel.make_mesh(1))
  state, _ = checkpoints.Checkpoints(workdir, read_only=True).restore(
      steps.abstract_state(gan, helpers.TINY_SIZE, sharding), step)
  return flat(state)


def assert_same_state(actual: dict, expected: dict) -> None:
  assert actual.keys() == expected.keys()
  for key in expected:
    np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  return helpers.make_photo_folder(tmp_path_factory.mktemp('photos'))


def test_sharded_step_equals_single_device_step(tmp_path):
  """With the global batch sharded over 4 devices, 3 train steps give the parameters,
  BatchNorm statistics, Adam states and metrics of 1 device (BatchNorm normalises
  over the global batch, not per device)."""
  out = tmp_path / 'steps.npz'
  worker('steps', out)
  results = np.load(out)
  one = sorted(k for k in results.files if k.startswith('1/'))
  assert len(one) > 50
  for key in one:
    assert_close(results['4/' + key[2:]], results[key], err_msg=key)


def test_two_process_run_equals_one_process_on_as_many_devices(photos, tmp_path):
  """`launch.py train` as 2 processes on localhost (jax.distributed, CPU collectives),
  each reading its half of every batch and checkpointing jointly, ends bitwise where
  one process on 2 devices ends."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  multi = tmp_path / 'two_processes'
  cmd = [sys.executable, os.path.join(ROOT, 'launch.py'), 'train',
         f'--config={os.path.join(ROOT, "experiments", "default.py")}', f'--workdir={multi}',
         *helpers.tiny_flags(photos, num_epochs=1), f'--coordinator_address=localhost:{port}',
         '--num_processes=2']
  procs = [subprocess.Popen(cmd + [f'--process_id={i}'], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = [p.communicate(timeout=900)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  assert 'Process 1 of 2' in logs[1]
  assert checkpoints.Checkpoints(multi, read_only=True).all_steps() == [3]
  assert sorted(p.name for p in (multi / 'samples').iterdir()) == ['epoch_001.png']
  single = tmp_path / 'one_process'
  worker('train', 2, photos, single, 1, num_cpu_devices=2)
  assert_same_state(restore_here(multi, photos), restore_here(single, photos))


def test_checkpoints_move_between_device_counts(photos, tmp_path):
  """A checkpoint saved on 4 devices restores bitwise on 1 and training continues there;
  one saved on 1 device restores bitwise on 4 and training continues there."""
  four_then_one, one_then_four = tmp_path / 'four_then_one', tmp_path / 'one_then_four'
  saved_on_four = tmp_path / 'saved_on_four.npz'
  worker('train', 4, photos, four_then_one, 1, saved_on_four)
  assert_same_state(restore_here(four_then_one, photos), dict(np.load(saved_on_four)))
  train.train_and_evaluate(helpers.tiny_config(photos, num_epochs=2), str(four_then_one))

  saved_on_one = flat(train.train_and_evaluate(helpers.tiny_config(photos, num_epochs=1),
                                               str(one_then_four)))
  restored_on_four = tmp_path / 'restored_on_four.npz'
  worker('restore', 4, photos, one_then_four, restored_on_four)
  assert_same_state(dict(np.load(restored_on_four)), saved_on_one)
  worker('train', 4, photos, one_then_four, 2)
  for workdir in (four_then_one, one_then_four):
    assert checkpoints.Checkpoints(workdir, read_only=True).all_steps() == [3, 6]


def test_batch_that_does_not_divide_by_the_devices_is_a_clear_error():
  """A global batch of 6 on 4 devices is refused with a message naming both fixes: another
  batch size for a new run, fewer devices for a resumed one (which must keep its batch)."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1] * 1), (parallel.DATA_AXIS,))
  parallel.check_batch_size(6, mesh)  # 1 device: fine
  with pytest.raises(ValueError, match=r'must divide by the number of devices \(4\).*use '
                     r'batch_size 4, or .*--config.num_devices=3'):
    parallel.check_batch_size(6, _FakeMesh(4))


class _FakeMesh:
  """Stands in for a 4-device mesh (this process has one device)."""

  def __init__(self, size):
    self.devices = np.empty(size, object)


@pytest.mark.parametrize('address,count,index,match', [
    (None, 2, None, 'together'),
    ('localhost:1234', None, None, 'together'),
    (None, None, 0, 'together'),      # --process_id alone was silently dropped
    ('localhost:1234', 1, 5, r'in \[0, --num_processes\)'),
    ('localhost:1234', 0, 0, r'in \[0, --num_processes\)'),
])
def test_partial_or_impossible_multi_process_flags_are_refused(address, count, index, match):
  """Before any device is touched: a clear ValueError (launch.py: exit 2), not JAX's
  traceback, and never a single-process run that ignores a flag it was given."""
  with pytest.raises(ValueError, match=match):
    parallel.initialize_distributed(address, count, index)


def test_launch_usage_errors_exit_with_status_2(tmp_path):
  """No mode, an unknown mode, a bad flag value and half the multi-process flags are usage
  errors (2), not runtime failures (1), with no traceback."""
  for args in ([], ['bogus'], ['train', '--config', 'experiments/default.py', '--workdir',
                               str(tmp_path), '--config.batch_size=abc'],
               ['train', '--config', 'experiments/default.py', '--workdir', str(tmp_path),
                '--num_processes', '2']):
    done = subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, (args, done.stderr[-500:])
    assert 'Traceback' not in done.stderr, args
    if args == ['bogus']:
      assert "unknown mode 'bogus'" in done.stderr


def test_launch_help_exits_with_status_0():
  """Help asked for (before or after the mode, absl's spellings and -h) is printed to stdout
  and is a success; absl's own handling exits 1 and knows no -h."""
  for args in (['--help'], ['-h'], ['train', '-h'], ['train', '--helpshort'], ['--helpfull'],
               ['colorize', '--helpfull'], ['select', '--helpshort']):
    done = subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, (args, done.stderr[-500:])
    assert ('--workdir' in done.stdout or 'usage: launch.py' in done.stdout), args
  # `-h` as a flag's value (a folder named -h) is no help request: here the bad batch size
  # is then the usage error (2), not help (0).
  done = subprocess.run([sys.executable, 'launch.py', 'train', '--config',
                         'experiments/default.py', '--workdir', '-h',
                         '--config.batch_size=abc'], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 2 and 'batch_size' in done.stderr, done.stderr[-500:]


def test_orbax_leftovers_of_a_failed_read_are_silenced_and_nothing_else(monkeypatch):
  """After a damaged checkpoint's one-line error, orbax's other pending reads failed again
  in its closed event loop and printed up to 500 lines (asyncio's 'Task exception was never
  retrieved', the interpreter's 'Exception ignored'): those are dropped, others are not."""
  import logging  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from colorize_jax import cli  # pylint: disable=g-import-not-at-top
  reported = []
  monkeypatch.setattr(sys, 'unraisablehook', reported.append)
  monkeypatch.setattr(cli, '_QUIETED', False)
  asyncio_log = logging.getLogger('asyncio')
  monkeypatch.setattr(asyncio_log, 'filters', [])
  cli._quiet_orbax_read_failures()  # pylint: disable=protected-access
  cli._quiet_orbax_read_failures()  # pylint: disable=protected-access  (installed once)
  assert len(asyncio_log.filters) == 1

  def record(text):
    return logging.LogRecord('asyncio', logging.ERROR, __file__, 1, text, None, None)

  assert not asyncio_log.filter(record(
      'Task exception was never retrieved\nfuture: <Task finished coro=<_read() defined at '
      '/venv/orbax/checkpoint/_src/serialization/serialization.py:272>>'))
  assert asyncio_log.filter(record('Task exception was never retrieved\nfuture: <Task mine>'))

  def unraisable(filename, message='Event loop is closed'):
    return types.SimpleNamespace(
        exc_type=RuntimeError, exc_value=RuntimeError(message), exc_traceback=None,
        err_msg=None,
        object=types.SimpleNamespace(cr_code=types.SimpleNamespace(co_filename=filename)))

  sys.unraisablehook(unraisable('/venv/orbax/checkpoint/_src/serialization.py'))
  no_object = unraisable('')
  no_object.object = None   # as TensorStore's callbacks report it (measured)
  sys.unraisablehook(no_object)
  assert not reported
  for other in (unraisable('/home/me/my_code.py'),
                unraisable('/venv/orbax/checkpoint/x.py', 'something else')):
    sys.unraisablehook(other)
  assert len(reported) == 2
