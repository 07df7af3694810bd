"""Runs a piece of training with N CPU devices (NUM_CPU_DEVICES, default 4), in a process of its own.

The number of host devices is fixed when JAX's backend starts, so tests that
compare device counts run this module in subprocesses:

  python -m tests.multidevice_worker steps OUT.npz
      3 train steps of a tiny GAN on a 1-device and on a 4-device mesh, from the
      same initial state and global batches; writes both results.
  python -m tests.multidevice_worker train NUM_DEVICES PHOTOS WORKDIR NUM_EPOCHS [OUT.npz]
      train_and_evaluate on the tiny photo config with NUM_DEVICES devices; writes
      the final state to OUT.npz if given.
  python -m tests.multidevice_worker restore NUM_DEVICES PHOTOS WORKDIR OUT.npz
      restores WORKDIR's latest checkpoint onto NUM_DEVICES devices, writes it.
"""

import os
import sys

import jax

# The CPU's threads are shared among its devices, which changes how reductions are
# split: bitwise comparisons need the same device count on both sides.
jax.config.update('jax_num_cpu_devices', int(os.environ.get('NUM_CPU_DEVICES', '4')))

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from colorize_jax import checkpoints  # pylint: disable=wrong-import-position
from colorize_jax import parallel  # pylint: disable=wrong-import-position
from colorize_jax import steps  # pylint: disable=wrong-import-position
from colorize_jax import train  # pylint: disable=wrong-import-position
from tests import helpers  # pylint: disable=wrong-import-position


def flat_state(state) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(parallel.fetch(state))[0]
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


def run_steps(out_path: str) -> None:
  config = helpers.tiny_config('unused', batch_size=8)
  gan = steps.GAN.from_config(config)
  initial = gan.init(jax.random.PRNGKey(0), config.image_size)
  rng = np.random.default_rng(0)
  batches = [{'image': np.kron(rng.integers(0, 256, (8, 4, 4, 3), dtype=np.uint8),
                               np.ones((1, 8, 8, 1), np.uint8))} for _ in range(3)]
  results = {}
  for num_devices in (1, 4):
    mesh = parallel.make_mesh(num_devices)
    replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    train_step = steps.compile_train_step(gan, in_shardings=(replicated, sharded),
                                          out_shardings=(replicated, replicated))
    state = parallel.replicate(initial, mesh)
    for batch in batches:
      global_batch = parallel.shard_batch(batch, mesh)
      assert len(global_batch['image'].sharding.device_set) == num_devices
      state, metrics = train_step(state, global_batch)
    results.update({f'{num_devices}/{k}': v for k, v in flat_state(state).items()})
    results.update({f'{num_devices}/metric/{k}': v for k, v in parallel.fetch(metrics).items()})
  np.savez(out_path, **results)


def main(argv):
  if argv[1] == 'steps':
    run_steps(argv[2])
  elif argv[1] == 'train':
    num_devices, photos, workdir, num_epochs = argv[2:6]
    config = helpers.tiny_config(photos, num_epochs=int(num_epochs))
    config.num_devices = int(num_devices)
    state = train.train_and_evaluate(config, workdir)
    if len(argv) > 6:
      np.savez(argv[6], **flat_state(state))
  elif argv[1] == 'restore':
    num_devices, photos, workdir, out_path = argv[2:6]
    config = helpers.tiny_config(photos)
    mesh = parallel.make_mesh(int(num_devices))
    gan = steps.GAN.from_config(config)
    state, _ = checkpoints.Checkpoints(workdir, read_only=True).restore(
        steps.abstract_state(gan, config.image_size, parallel.replicated(mesh)))
    assert len(state.step.sharding.device_set) == int(num_devices)
    np.savez(out_path, **flat_state(state))
  else:
    raise SystemExit(__doc__)


if __name__ == '__main__':
  main(sys.argv)
