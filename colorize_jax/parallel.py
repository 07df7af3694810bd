"""Data parallelism: a 1-D device mesh, the batch sharded over it, the state replicated.

The current JAX idiom (pmap is kept in maintenance mode and is itself `jit` +
`shard_map` since JAX 0.8): place the global batch as one array sharded over a
'data' mesh axis, keep the GAN state replicated, and let `jit` partition the
step. Means over the batch axis -- BatchNorm statistics, losses, metrics -- are
then means over the global batch on every device count, so 1 device and N
devices compute the same function (pix2pix's multi-GPU BatchNorm, per device,
does not).
"""

import os
from typing import Any

from absl import logging
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins a multi-process (multi-host) run; a no-op for a single process.

  Under SLURM (or another environment JAX detects) the arguments may be omitted.
  Must run before anything touches a JAX device.

  Args:
    coordinator_address: 'host:port' of process 0.
    num_processes: total number of processes.
    process_id: this process's index in [0, num_processes).
  """
  given = [x is not None for x in (coordinator_address, num_processes, process_id)]
  under_scheduler = 'SLURM_JOB_ID' in os.environ and int(
      os.environ.get('SLURM_NTASKS', '1')) > 1
  if not any(given) and not under_scheduler:
    return
  if any(given) and not all(given):
    raise ValueError('A multi-process run needs --coordinator_address, --num_processes and '
                     '--process_id together (or none of them under SLURM).')
  if all(given) and not (num_processes >= 1 and 0 <= process_id < num_processes):
    raise ValueError(f'--process_id must be in [0, --num_processes) and --num_processes >= 1, '
                     f'got {process_id} of {num_processes}.')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info('Process %d of %d, %d local of %d devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over all devices (or the first `num_devices`), axis 'data'."""
  devices = jax.devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f'num_devices must be in [1, {len(devices)}], got {num_devices}')
    devices = devices[:num_devices]
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Sharding of arrays every device holds in full (the GAN state, metrics)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Sharding of arrays split over devices along their first (batch) axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
  """Raises ValueError unless the global batch is >= 1 and divides by the device and
  process counts."""
  if global_batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {global_batch_size}')
  devices, processes = mesh.devices.size, jax.process_count()
  if global_batch_size % devices or global_batch_size % processes:
    # A resumed run keeps its batch size: fewer devices is then the way.
    fewer = max((n for n in range(1, devices + 1)
                 if global_batch_size % n == 0 and n % processes == 0), default=None)
    raise ValueError(
        f'batch_size {global_batch_size} must divide by the number of devices ({devices}) '
        f'and of processes ({processes}); e.g. use batch_size '
        f'{devices * max(1, global_batch_size // devices)}' +
        (f', or (to keep this batch size, as a resumed run must) --config.num_devices={fewer}'
         if fewer else ''))


def shard_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Assembles each process's rows into global arrays sharded over the 'data' axis.

  Args:
    local_batch: this process's slice of the global batch, e.g. {'image': uint8
      [global_batch / process_count, H, W, 3]}.
    mesh: the device mesh.

  Returns:
    The same keys as global `jax.Array`s of the global batch size.
  """
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places a pytree of arrays, equal on every process, on every device of the mesh."""
  sharding = replicated(mesh)

  def place(x):
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(place, tree)


def fetch(tree: Any) -> Any:
  """Copies a pytree of replicated arrays to host numpy arrays (on every process)."""
  def to_host(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))  # every process holds a full replica
    return np.asarray(jax.device_get(x))
  return jax.tree.map(to_host, tree)
