"""A run's directory: its config and its orbax checkpoints.

  workdir/
    config.json            the run's config (written by process 0 at the start)
    checkpoints/<step>/    one orbax checkpoint per epoch (and on interruption):
      state/               the `GANState` (both nets, both Adam states, step, RNG)
      meta/                JSON: epoch, steps_per_epoch, whether the epoch ended
                           (validated), validation metrics
    samples/               PNG grids of validation colorizations, one per epoch
    events.out.tfevents.*  TensorBoard scalars and images

orbax writes each checkpoint to a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoints intact.
"""

import json
import os
from typing import Any

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'


def save_config(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
  """Writes `config` as JSON to workdir/config.json (process 0 only)."""
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (CONFIG_FILE + '.tmp')
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  tmp.replace(path)


def load_config(workdir: epath.PathLike) -> ml_collections.ConfigDict:
  """Reads the config a run saved in its workdir.

  Raises:
    FileNotFoundError: if `workdir` holds no config.json (not a training run).
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f'{path} not found: is {workdir} the workdir of a training run?')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def config_differences(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict,
                       prefix: str = '') -> dict[str, tuple[Any, Any]]:
  """Fields whose values differ between two configs: {'a.b': (old, new)}.

  Tuples and lists compare equal element-wise (JSON turns tuples into lists).
  """
  old_d = old.to_dict() if hasattr(old, 'to_dict') else dict(old)
  new_d = new.to_dict() if hasattr(new, 'to_dict') else dict(new)
  diffs = {}
  for key in sorted(set(old_d) | set(new_d)):
    a, b = old_d.get(key), new_d.get(key)
    name = prefix + key
    if isinstance(a, dict) and isinstance(b, dict):
      diffs.update(config_differences(ml_collections.ConfigDict(a), ml_collections.ConfigDict(b),
                                      name + '.'))
    elif (list(a) if isinstance(a, (list, tuple)) else a) != (
        list(b) if isinstance(b, (list, tuple)) else b):
      diffs[name] = (a, b)
  return diffs


class Checkpoints:
  """Saves and restores `GANState`s with their metadata under workdir/checkpoints.

  Steps are global train steps. `keep=None` keeps every checkpoint (the paper
  selects among all 20 epochs).
  """

  def __init__(self, workdir: epath.PathLike, keep: int | None = None, read_only: bool = False):
    # orbax wants absolute paths.
    directory = epath.Path(os.path.abspath(workdir)) / CHECKPOINT_DIR
    if read_only and not directory.exists():
      raise FileNotFoundError(f'No checkpoints in {workdir} ({directory} does not exist).')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only)
    self._manager = ocp.CheckpointManager(directory, options=options,
                                          item_names=('state', 'meta'))

  @property
  def directory(self) -> epath.Path:
    return self._manager.directory

  def all_steps(self) -> list[int]:
    """Steps of the complete checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Starts saving `state` and `meta` (JSON-serialisable) as checkpoint `step`.

    The write finishes in the background; `wait()` blocks until it is on disk.
    """
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint `step` (default: the latest) into the given structure.

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct` (with shardings for the
        devices of this run, which need not be those that saved it).
      step: which checkpoint; None for the latest.

    Returns:
      (state, meta).

    Raises:
      FileNotFoundError: if there is no such checkpoint.
    """
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(f'No checkpoint in {self.directory}.')
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(f'No checkpoint at step {step} in {self.directory}; '
                              f'saved steps: {steps}')
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON metadata of checkpoint `step`, without loading the state."""
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  def wait(self) -> None:
    """Blocks until every started save is complete on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
