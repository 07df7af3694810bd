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

`Checkpoints.restore` reads a whole state (to resume training);
`Checkpoints.restore_subtree` reads only some of its arrays (e.g. a net's
weights without its optimizer state, for inference), with orbax's partial
restore: the arrays left out are never read from disk.
"""

import contextlib
import json
import os
import shutil
from typing import Any, Iterator

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
STATE_ITEM = 'state'
_STEP_METADATA = '_CHECKPOINT_METADATA'   # orbax's per-step JSON (commit time, handlers)
# Deleted checkpoints are renamed into this subfolder (atomic), then removed: a kill in
# the middle of removing one leaves no half checkpoint among the steps.
_TRASH = '.deleted'
# An interruption checkpoint being replaced by its step's epoch-end one waits here until
# the new one is complete (a kill between would otherwise lose that epoch's training).
_SUPERSEDED = '.superseded-'
_ORBAX_TMP = '.orbax-checkpoint-tmp'   # in the name of a step folder orbax is writing


class CorruptCheckpoint(ValueError):
  """A saved checkpoint (or config.json) exists but cannot be read: truncated or damaged."""


class SaveError(OSError):
  """A checkpoint could not be written (a full disk, say); the earlier ones are intact."""


# How orbax says that an array on disk has another shape than the one asked for.
_SHAPE_MISMATCH = 'not compatible with the stored shape'


def _innermost(e: BaseException) -> BaseException:
  """The error at the bottom of `e`'s chain of causes (it names the damaged file)."""
  while e.__cause__ is not None:
    e = e.__cause__
  return e


def _first_line(e: BaseException) -> str:
  """The first line of the innermost error, at most 300 characters."""
  first_line = (str(_innermost(e)).strip().splitlines() or [''])[0]
  return first_line[:300] + '...' if len(first_line) > 300 else first_line


def _unreadable(what: str, e: BaseException, hint: str = '') -> CorruptCheckpoint:
  return CorruptCheckpoint(f'{what} cannot be read, it looks damaged or truncated '
                           f'({type(_innermost(e)).__name__}: {_first_line(e)}).{hint}')


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
    CorruptCheckpoint: if it is not a JSON object.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f'{path} not found: is {workdir} the workdir of a training run?')
  try:
    fields = json.loads(path.read_text())
  except ValueError as e:
    raise _unreadable(str(path), e) from e
  if not isinstance(fields, dict):
    raise CorruptCheckpoint(f'{path} holds a JSON {type(fields).__name__}, not a config.')
  return ml_collections.ConfigDict(fields)


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


def commit_id(workdir: epath.PathLike, step: int) -> str:
  """What tells this save of checkpoint `step` from any other save of that step.

  orbax's commit time (ns) of the checkpoint (kept by copies and moves of the run),
  or where it lacks one, the step folder's modification time. A run retrained from
  an earlier step, or restarted in the same workdir, gets new ones.

  Raises:
    FileNotFoundError: no such checkpoint.
  """
  directory = epath.Path(os.path.abspath(workdir)) / CHECKPOINT_DIR
  path = ocp.step.find_step_path(directory, ocp.step.standard_name_format(), step=step)
  try:
    return str(int(json.loads((path / _STEP_METADATA).read_text())['commit_timestamp_nsecs']))
  except (OSError, ValueError, KeyError, TypeError):
    return f'mtime:{path.stat().st_mtime_ns}'


class Checkpoints:
  """Saves and restores `GANState`s with their metadata under workdir/checkpoints.

  Steps are global train steps. A checkpoint whose meta says 'epoch_end': False
  (saved when a run was interrupted mid-epoch) is deleted once a later epoch's
  checkpoint is on disk: it only served to resume. `keep=None` keeps every epoch's
  checkpoint (the paper selects among all 20 epochs), `keep=N` the latest N; a
  checkpoint is only ever deleted once a later epoch's checkpoint is complete.
  """

  def __init__(self, workdir: epath.PathLike, keep: int | None = None, read_only: bool = False):
    if keep is not None and keep < 1:
      raise ValueError(f'keep (config.keep_checkpoints) must be None (every epoch\'s '
                       f'checkpoint) or >= 1, got {keep}')
    self._keep, self._read_only = keep, read_only
    self._epoch_end: dict[int, bool] = {}
    self._writing: int | None = None   # the step of the save started last
    # orbax wants absolute paths.
    directory = epath.Path(os.path.abspath(workdir)) / CHECKPOINT_DIR
    if read_only and not directory.exists():
      raise FileNotFoundError(f'No checkpoints in {workdir} ({directory} does not exist).')
    # Retention is ours (`_prune`): orbax's max_to_keep would count interruption
    # checkpoints and push out epochs' checkpoints.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, create=not read_only, read_only=read_only,
        todelete_subdir=None if read_only else _TRASH)
    # How the manager names step folders, for `restore_subtree`.
    self._step_names = ocp.step.standard_name_format(
        step_prefix=options.step_prefix,
        step_format_fixed_length=options.step_format_fixed_length)
    self._manager = ocp.CheckpointManager(directory, options=options,
                                          item_names=(STATE_ITEM, 'meta'))
    if not read_only:
      self._recover()

  def _primary(self) -> bool:
    return jax.process_index() == 0

  def _recover(self) -> None:
    """Finishes what a killed process left (only training opens checkpoints writable,
    holding the workdir's lock): an interruption checkpoint set aside for its step's new
    save goes back if that save never completed (else it goes); the folders of saves
    that never completed and deleted checkpoints still in the trash are removed."""
    if self._primary():
      for partial in self.directory.glob(f'*{_ORBAX_TMP}*'):
        shutil.rmtree(partial, ignore_errors=True)
      for aside in self.directory.glob(_SUPERSEDED + '*'):
        step = int(aside.name[len(_SUPERSEDED):])
        if step not in self.all_steps():
          aside.rename(self.directory / self._step_names.build_name(step))
          self._manager.reload()
    self._empty_trash()   # and the set-aside ones whose new save did complete

  def _empty_trash(self) -> None:
    """Removes deleted checkpoints, and interruption checkpoints set aside for a save of
    their step that is now complete."""
    if self._primary():
      shutil.rmtree(self.directory / _TRASH, ignore_errors=True)
      for aside in self.directory.glob(_SUPERSEDED + '*'):
        if int(aside.name[len(_SUPERSEDED):]) in self.all_steps():
          shutil.rmtree(aside, ignore_errors=True)

  @property
  def directory(self) -> epath.Path:
    return self._manager.directory

  def step_directory(self, step: int) -> epath.Path:
    """The folder of checkpoint `step` (a saved one)."""
    return ocp.step.find_step_path(self.directory, self._step_names, step=step)

  def all_steps(self) -> list[int]:
    """Steps of the complete checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Starts saving `state` and `meta` (JSON-serialisable) as checkpoint `step`.

    The write finishes in the background; `wait()` blocks until it is on disk.
    Checkpoints that earlier saves superseded are deleted first (see the class), and
    so is an interruption checkpoint at `step` itself (an epoch's training saved when
    its validation failed, now validated).
    """
    self._prune()
    if step in self.all_steps() and not self.is_epoch_end(step):
      if jax.process_count() == 1:   # set aside until the new save is complete
        self.step_directory(step).rename(self.directory / f'{_SUPERSEDED}{step}')
        self._manager.reload()
      else:
        self._manager.delete(step)
      self._epoch_end.pop(step, None)
    self._epoch_end[step] = bool(meta.get('epoch_end', True))
    self._writing = step
    with self._saving(step, background=False):
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
      CorruptCheckpoint: if its files cannot be read.
    """
    step = self._check_step(step)
    with self._reading(step):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def restore_subtree(self, abstract_subtree: dict[str, Any],
                      step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restores only some arrays of checkpoint `step` (default: the latest).

    Args:
      abstract_subtree: nested dicts that name, by the saved state's attribute
        and key names, the parts to read, with `jax.ShapeDtypeStruct` leaves
        (with shardings for this run's devices); e.g. {'generator': {'params':
        abstract.generator.params, 'batch_stats': abstract.generator.batch_stats}}
        reads the generator's weights and not its optimizer state.
      step: which checkpoint; None for the latest.

    Returns:
      (subtree, meta): the subtree has the structure of `abstract_subtree`, with
      arrays; nothing outside it is read from disk.

    Raises:
      FileNotFoundError: if there is no such checkpoint.
      ValueError: if the checkpoint lacks a part of `abstract_subtree`.
      CorruptCheckpoint: if its files cannot be read.
    """
    step = self._check_step(step)
    # The manager's 'state' handler is the StandardCheckpointHandler its saves
    # registered, which has no partial restore; a PyTree checkpointer reads the
    # same files (StandardSave writes a PyTree checkpoint).
    path = self.step_directory(step) / STATE_ITEM
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_subtree)
    with self._reading(step), ocp.PyTreeCheckpointer() as checkpointer:
      subtree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
          item=abstract_subtree, restore_args=restore_args, partial_restore=True))
    # orbax hands back the abstract leaf for a path the checkpoint lacks.
    missing = [jax.tree_util.keystr(p) for p, leaf in jax.tree_util.tree_leaves_with_path(subtree)
               if isinstance(leaf, jax.ShapeDtypeStruct)]
    if missing:
      raise ValueError(f'Checkpoint {step} in {self.directory} has no {", ".join(missing[:5])}'
                       + (f' (and {len(missing) - 5} more)' if len(missing) > 5 else '') + '.')
    # A partial restore hands back the stored shape whatever shape was asked for.
    wrong = [f'{jax.tree_util.keystr(p)}: requested {want.shape}, stored {got.shape}'
             for (p, got), want in zip(jax.tree_util.tree_leaves_with_path(subtree),
                                       jax.tree_util.tree_leaves(abstract_subtree))
             if got.shape != want.shape]
    if wrong:
      raise self._other_shapes(step, wrong[0])
    return subtree, self.read_meta(step)

  def _check_step(self, step: int | None) -> int:
    """`step`, or the latest step if None; raises FileNotFoundError if it is not saved."""
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(f'No checkpoint in {self.directory}.')
      return steps[-1]
    if step not in steps:
      raise FileNotFoundError(f'No checkpoint at step {step} in {self.directory}; '
                              f'saved steps: {steps}')
    return step

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON metadata of checkpoint `step`, without loading the state.

    Raises:
      CorruptCheckpoint: if it cannot be read.
    """
    with self._reading(step):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  @contextlib.contextmanager
  def _reading(self, step: int) -> Iterator[None]:
    """Turns whatever orbax and TensorStore raise for damaged files into CorruptCheckpoint."""
    try:
      yield
    except CorruptCheckpoint:
      raise
    except ValueError as e:
      if _SHAPE_MISMATCH not in str(e):
        raise self._damaged(step, e) from e
      # Intact files of another architecture: "damaged" would have a good checkpoint deleted.
      raise self._other_shapes(step, _first_line(e)) from e
    except Exception as e:  # pylint: disable=broad-except
      # TensorStore and orbax report damaged files with ValueError, OSError,
      # json errors or a bare Exception, depending on where the damage is; a file
      # missing from a saved step (FileNotFoundError: a delete or a copy cut short)
      # is damage too, not "no such checkpoint" (callers check the step first).
      raise self._damaged(step, e) from e

  def _other_shapes(self, step: int, detail: str) -> ValueError:
    return ValueError(
        f'Checkpoint {step} in {self.directory} holds arrays of other shapes than this '
        f'model\'s ({detail}): it was saved with another config (model width, depth, image '
        'size, ...). Use the run\'s own config, or a new --workdir.')

  def _damaged(self, step: int, e: BaseException) -> CorruptCheckpoint:
    others = [s for s in self.all_steps() if s != step]
    return _unreadable(f'Checkpoint {step} in {self.directory}', e,
                       f' Other saved steps: {others}.' if others else '')

  @contextlib.contextmanager
  def _saving(self, step: int | None, background: bool = True) -> Iterator[None]:
    """Turns a failed write of checkpoint `step` into a SaveError that says what is kept.

    Whatever the background write raised (TensorStore reports a full disk as a
    ValueError) is a failed write; in the foreground only an OSError is (anything
    else there is a bug, raised as it is).
    """
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      if not background and not isinstance(e, OSError):
        raise
      kept = [s for s in self.all_steps() if s != step]
      raise SaveError(f'Checkpoint {step} could not be written to {self.directory} '
                      f'({type(e).__name__}: {e}). The checkpoints saved before it are intact '
                      f'({kept}); once the cause is fixed (disk space, permissions), running '
                      'the same command resumes from the latest.') from e

  def wait(self) -> None:
    """Blocks until every started save is complete on disk.

    Raises:
      SaveError: a save failed (e.g. the disk is full).
    """
    with self._saving(self._writing):
      self._manager.wait_until_finished()

  def check(self) -> None:
    """Raises SaveError if a save that has ended in the background failed; never waits.

    Called between train steps, so that a full disk stops the run within a few steps
    of the failed save, not an epoch later at the next one.
    """
    with self._saving(self._writing):
      self._manager.check_for_errors()

  def close(self) -> None:
    """Waits for started saves, applies the retention rules (if this object saved a
    checkpoint) and releases the manager.

    A process that saved nothing deletes nothing: a relaunch refused (or with nothing
    left to train) under a lower `keep` must leave the run as it was.
    """
    try:
      if self._writing is not None:
        self._prune()
      else:
        self.wait()
    finally:
      self._manager.close()

  def is_epoch_end(self, step: int) -> bool:
    """Whether checkpoint `step` was saved at the end of an epoch, not on an interruption.

    Raises:
      CorruptCheckpoint: if its metadata cannot be read.
    """
    if step not in self._epoch_end:
      self._epoch_end[step] = bool(self.read_meta(step).get('epoch_end', True))
    return self._epoch_end[step]

  def _prune(self) -> None:
    """Deletes interruption checkpoints older than the latest complete epoch checkpoint,
    and epoch checkpoints beyond the latest `keep` (never one that cannot be read)."""
    if self._read_only:
      return
    self.wait()   # look at complete checkpoints only
    self._empty_trash()   # a step set aside for a save now complete
    ends, interrupted = [], []
    for step in self.all_steps():
      try:
        (ends if self.is_epoch_end(step) else interrupted).append(step)
      except CorruptCheckpoint:
        continue   # left for a person to look at
    if not ends:
      return
    doomed = [step for step in interrupted if step < ends[-1]]
    if self._keep is not None:
      doomed += ends[:-self._keep]
    for step in sorted(doomed):
      self._manager.delete(step)
      self._epoch_end.pop(step, None)
    self._empty_trash()
