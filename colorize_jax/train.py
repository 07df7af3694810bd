"""The training loop: epochs of train steps, validation, samples and checkpoints.

`train_and_evaluate(config, workdir)` is the whole of training. Running it again
on the same workdir continues from the latest checkpoint: the state holds the
step, both nets, both Adam states and the RNG, and the input pipeline derives an
epoch's order and augmentations from (seed, epoch, position), so a resumed run
ends with the parameters of an uninterrupted one.
"""

import contextlib
import functools
import hashlib
import os
import signal
import threading
from typing import Any, Iterator

from absl import logging
from clu import metric_writers
from etils import epath
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tqdm

from colorize_jax import checkpoints
from colorize_jax import color
from colorize_jax import files
from colorize_jax import images
from colorize_jax import input_pipeline
from colorize_jax import parallel
from colorize_jax import steps
from colorize_jax import visualize

# A resumed run must keep these (a prefix ending in '.' covers a whole section): the
# state's shapes, the data order, and which photos are trained and validated on.
_FROZEN_ON_RESUME = ('image_size', 'batch_size', 'seed', 'model.', 'data.source',
                     'data.folder', 'data.places_classes', 'data.num_train', 'data.num_val',
                     'data.val_fraction', 'data.samples_per_epoch')
_DATA_PATHS = ('folder', 'tfds_data_dir')   # config.data fields that name folders
LOCK_FILE = '.train.lock'   # in the workdir, see `_workdir_lock`


class NonFiniteLossError(RuntimeError):
  """A loss or gradient became NaN or infinite; the run stopped without saving."""


class StopRequested:
  """Turns SIGINT / SIGTERM into a stop that every process agrees on, between steps.

  One process: its own handlers set a flag. Several processes: SIGTERM is JAX's
  preemption notice, which the coordination service turns into a step at which
  every process stops (`reached_preemption_sync_point`), so that all of them
  take part in the final (collective) checkpoint.

  A second signal before that checkpoint is started means "now" (KeyboardInterrupt);
  once `saving` is set (also while an epoch's checkpoint is saved: `shielding`),
  further signals are logged and ignored until the block ends,
  so that a repeated SIGTERM (a wrapper forwarding it, an impatient scheduler) cannot
  cut the save short and lose what it was saving.
  """

  def __init__(self):
    self.signum = None
    self.saving = False
    self._previous = {}
    self._multi_process = jax.process_count() > 1

  def __enter__(self):
    if threading.current_thread() is threading.main_thread() and not self._multi_process:
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      if self.saving:
        logging.warning('Received %s again: still saving the checkpoint (SIGKILL abandons '
                        'it).', signal.Signals(signum).name)
        return
      raise KeyboardInterrupt  # a second Ctrl-C before the save: the user means it
    self.signum = signum
    logging.warning('Received %s: saving a checkpoint after the current step, then exiting.',
                    signal.Signals(signum).name)

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  @contextlib.contextmanager
  def shielding(self) -> Iterator[None]:
    """Within the block (a checkpoint being saved) a signal only requests a stop and a
    repeated one is ignored: the second of two would otherwise cut the save short."""
    before, self.saving = self.saving, True
    try:
      yield
    finally:
      self.saving = before

  def check(self, step: int) -> bool:
    """Whether to stop after `step`; collective in multi-process runs (call on every step)."""
    if self._multi_process and self.signum is None and (
        multihost_utils.reached_preemption_sync_point(step)):
      self.signum = signal.SIGTERM
    return self.signum is not None

  def __bool__(self):
    return self.signum is not None


def validation_step(state: steps.GANState, batch: steps.Batch, gan: steps.GAN) -> steps.Metrics:
  """Per-example validation metrics [N]: `steps.eval_step`'s losses plus image quality.

  Adds psnr (dB, colorized vs real RGB), auc (Zhang et al.'s ab-error AuC) and
  cf (colourfulness), and the same for the gray baseline (ab = 0): gray_psnr,
  gray_ab_mae, gray_auc (`steps.quality_step`, which evaluate scores checkpoints with).
  """
  out = steps.eval_step(state, batch, gan)
  quality = steps.quality_step(state, batch['image'], gan)
  model, gray = quality['model'], quality['gray']
  out.update(psnr=model['psnr'], auc=model['auc'], cf=model['cf'], gray_psnr=gray['psnr'],
             gray_ab_mae=gray['ab_l1'], gray_auc=gray['auc'])
  if 'mask' in batch:  # handed back gathered, for the caller's masked means
    out['mask'] = batch['mask']
  return out


def colorize_step(state: steps.GANState, rgb: jnp.ndarray, gan: steps.GAN) -> jnp.ndarray:
  """Colorizes the gray version of uint8 RGB [N, S, S, 3]: float RGB [N, S, S, 3] in [0, 1]."""
  l_norm, _ = color.rgb_to_model_inputs(rgb)
  return color.model_outputs_to_rgb(l_norm, steps.generate_ab(gan, state.generator, l_norm))


def _absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose data folders are absolute: the run's config.json must name
  the same photos from wherever `evaluate`, `select` or a resume is run."""
  config = config.copy_and_resolve_references()
  for name in _DATA_PATHS:
    if config.data.get(name):
      config.data[name] = os.path.abspath(os.path.expanduser(config.data[name]))
  return config


def data_signatures(splits: input_pipeline.Splits) -> dict[str, str]:
  """What a checkpoint records of its data, as 16 hex digits each: 'data' names which
  images are trained and validated on, in which order; 'data_files' their names and
  sizes in bytes too (a photo replaced by another of the same name changes it)."""
  names, files_ = hashlib.sha256(), hashlib.sha256()
  for image_set in (splits.train, splits.val):
    for i, name in enumerate(image_set.names):
      if image_set.paths is not None:
        size = os.path.getsize(image_set.paths[i])
      elif image_set.blobs is not None:
        size = len(image_set.blobs[i])
      else:
        size = image_set.pixels[i].nbytes
      names.update(os.fsencode(name) + b'\0')
      files_.update(os.fsencode(name) + b'\0' + str(size).encode() + b'\0')
    names.update(b'\1')
    files_.update(b'\1')
  return {'data': names.hexdigest()[:16], 'data_files': files_.hexdigest()[:16]}


def _check_resumable(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Refuses to resume with a config that changes the state's shapes or the data order."""
  try:
    saved = _absolute_paths(checkpoints.load_config(workdir))   # runs that saved them relative
  except FileNotFoundError:
    logging.warning('%s has checkpoints but no %s: resuming without checking that this config '
                    'matches the one they were saved with.', workdir, checkpoints.CONFIG_FILE)
    return
  diffs = checkpoints.config_differences(saved, config)
  frozen = {k: v for k, v in diffs.items()
            if any(k == f or (f.endswith('.') and k.startswith(f)) for f in _FROZEN_ON_RESUME)}
  if frozen:
    lines = ', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in frozen.items())
    raise ValueError(f'{workdir} holds a run with a different {lines}; a resumed run must keep '
                     'these. Use a new --workdir for a new run.')
  for key, (a, b) in diffs.items():
    logging.warning('Config changed since the last run in %s: %s: %r -> %r', workdir, key, a, b)


def _validate_config(config: ml_collections.ConfigDict) -> None:
  if config.num_epochs < 1:
    raise ValueError(f'num_epochs must be >= 1, got {config.num_epochs}')
  if config.log_every_steps < 1:
    raise ValueError(f'log_every_steps must be >= 1, got {config.log_every_steps}')
  if config.num_sample_images < 0:
    raise ValueError(f'num_sample_images must be >= 0, got {config.num_sample_images}')
  # jax.random.PRNGKey takes 64-bit ints (without jax_enable_x64 it keeps their low 32
  # bits for the initial weights; the data order uses all 64).
  if not -2**63 <= config.seed < 2**63:
    raise ValueError(f'seed must be a 64-bit integer (-2**63 <= seed < 2**63), got '
                     f'{config.seed}')
  input_pipeline.crop_scale(config.data)   # else only found once the config is saved


@contextlib.contextmanager
def _workdir_lock(workdir: epath.Path) -> Iterator[None]:
  """Holds the workdir's lock (process 0), so that two trainings cannot write the same
  checkpoints."""
  if jax.process_index() != 0:
    yield
    return
  try:
    with files.exclusive_lock(workdir / LOCK_FILE):
      yield
  except files.Busy:
    raise ValueError(f'Another training process is using {workdir} (it holds '
                     f'{workdir / LOCK_FILE}); wait for it to end or use another '
                     '--workdir.') from None


class _Validator:
  """Runs the validation set through the model and writes metrics and a sample grid."""

  def __init__(self, config, splits, gan, mesh, writer, workdir):
    self._config, self._splits, self._writer = config, splits, writer
    self._mesh = mesh
    self._samples_dir = workdir / 'samples'
    replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    self._step = steps.jit(functools.partial(validation_step, gan=gan),
                           in_shardings=(replicated, sharded), out_shardings=replicated)
    self._colorize = steps.jit(functools.partial(colorize_step, gan=gan),
                               in_shardings=(replicated, replicated), out_shardings=replicated)
    self._sample_images = None

  def _batches(self):
    return input_pipeline.val_batches(
        self._splits, image_size=self._config.image_size,
        global_batch_size=self._config.batch_size, process_index=jax.process_index(),
        process_count=jax.process_count())

  def __call__(self, state, epoch: int) -> dict[str, float]:
    sums, count = {}, 0.0
    for local in self._batches():
      per_example = parallel.fetch(self._step(state, parallel.shard_batch(local, self._mesh)))
      global_mask = per_example.pop('mask').astype(np.float64)
      for key, values in per_example.items():
        sums[key] = sums.get(key, 0.0) + float(np.sum(np.asarray(values, np.float64) *
                                                      global_mask))
      count += float(global_mask.sum())
    results = {k: v / max(count, 1.0) for k, v in sums.items()}
    self._writer.write_scalars(state_step(state), {f'val/{k}': v for k, v in results.items()})
    self._write_samples(state, epoch)
    return results

  def _write_samples(self, state, epoch: int) -> None:
    if self._sample_images is None:
      picked = []
      for local in input_pipeline.val_batches(
          self._splits, image_size=self._config.image_size,
          global_batch_size=self._config.batch_size):
        picked.append(local['image'][local['mask']])
        if sum(len(x) for x in picked) >= self._config.num_sample_images:
          break
      size = self._config.image_size
      self._sample_images = (np.concatenate(picked) if picked else  # no validation images
                             np.zeros((0, size, size, 3), np.uint8))[
                                 :self._config.num_sample_images]
    if not len(self._sample_images):
      return
    generated = parallel.fetch(self._colorize(
        state, parallel.replicate(self._sample_images, self._mesh)))
    grid = visualize.comparison_grid([visualize.gray_rgb(self._sample_images),
                                      images.to_uint8(generated), self._sample_images])
    if jax.process_index() == 0:
      images.save_png(grid, self._samples_dir / f'epoch_{epoch + 1:03d}.png')
    self._writer.write_images(state_step(state), {'samples/gray_generated_real': grid[None]})


def state_step(state: steps.GANState) -> int:
  """The state's train step as a Python int."""
  return int(parallel.fetch(state.step))


# A mean binary cross-entropy above this means patch logits confidently wrong by ~e^50:
# a diverged run. A healthy one stays below 2 (0.37-1.7 over the 8 epochs of
# experiments/results/photos_cpu_curves.png), and a diverged one can go on without a NaN
# (learning rates of 1e6: losses of 1e12-3e13 from the first steps), so it is logged.
DIVERGED_BCE = 50.0


def _log_train_metrics(writer, step: int, sums: dict[str, Any], count: int) -> dict[str, float]:
  means = {k: float(v) / count for k, v in parallel.fetch(sums).items()}
  if means.pop('nonfinite') > 0 or not all(np.isfinite(v) for v in means.values()):
    raise NonFiniteLossError(
        f'A loss or gradient became NaN or infinite between steps {step - count + 1} and {step} '
        f'(means over those steps: {means}). Nothing was saved after it: the run\'s '
        'checkpoints, if it has any, hold its last good states. Lower the learning rates '
        '(optim.*) or check the data; running the same command resumes from the latest '
        'checkpoint (delete later ones under checkpoints/ to resume from an earlier one).')
  diverged = {k: means[k] for k in ('d_loss', 'g_adversarial') if means[k] > DIVERGED_BCE}
  if diverged:
    logging.warning('Training looks diverged at step %d: %s (binary cross-entropies a '
                    'healthy run keeps below 2). Lower the learning rates (optim.*) or '
                    'resume from an earlier checkpoint.', step,
                    ', '.join(f'{k} {v:.3g}' for k, v in diverged.items()))
  writer.write_scalars(step, {f'train/{k}': v for k, v in means.items()})
  return means


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> steps.GANState:
  """Trains the GAN for `config.num_epochs`, validating and checkpointing every epoch.

  Args:
    config: an experiment config (see experiments/default.py).
    workdir: directory for checkpoints, config, samples and TensorBoard events;
      a run that exists there is resumed from its latest checkpoint.

  Returns:
    The final `GANState` (replicated over the devices).

  Raises:
    NonFiniteLossError: a loss or gradient became NaN or infinite.
    ValueError: a bad config value, a workdir that cannot be written or that another
      training process is using, or a config that cannot resume this workdir.
    input_pipeline.DataReadError: images that could be read at the start cannot be.
  """
  _validate_config(config)
  config = _absolute_paths(config)
  workdir = epath.Path(os.path.abspath(workdir))
  mesh = parallel.make_mesh(config.get('num_devices', None))
  parallel.check_batch_size(config.batch_size, mesh)
  gan = steps.GAN.from_config(config)
  # A new run refused before it saved anything (no images, say) leaves no trace.
  made = [p for p in (workdir, workdir / checkpoints.CHECKPOINT_DIR, workdir / LOCK_FILE)
          if not p.exists()] if jax.process_index() == 0 else []
  files.check_writable(workdir, 'the run (--workdir)')
  with _workdir_lock(workdir):
    try:
      return _train(config, workdir, mesh, gan)
    except BaseException:
      _remove_if_empty(made)   # while locked: never another process's lock file
      raise


def _remove_if_empty(made: list[epath.Path]) -> None:
  """Removes the lock file and the empty folders in `made` (paths this process created),
  deepest first; a folder with anything in it (a checkpoint, a log) stays."""
  for path in sorted(made, key=lambda p: len(p.parts), reverse=True):
    try:
      if path.name == LOCK_FILE:
        path.unlink(missing_ok=True)
      elif path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    except OSError:   # best effort: the error being raised is what matters
      pass


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, mesh: jax.sharding.Mesh,
           gan: steps.GAN) -> steps.GANState:
  """`train_and_evaluate` once its arguments are checked and the workdir is locked."""
  ckpts = checkpoints.Checkpoints(workdir, keep=config.get('keep_checkpoints', None))
  try:
    state = _resume_and_train(config, workdir, mesh, gan, ckpts)
  except BaseException:
    # Whatever stopped the run, the checkpoint of the epoch just ended must reach the disk.
    try:
      ckpts.close()
    except Exception:  # pylint: disable=broad-except
      logging.exception('Finishing the checkpoints of %s failed too.', workdir)
    raise
  ckpts.close()
  return state


def _resume_and_train(config: ml_collections.ConfigDict, workdir: epath.Path,
                      mesh: jax.sharding.Mesh, gan: steps.GAN,
                      ckpts: checkpoints.Checkpoints) -> steps.GANState:
  """Restores the run in `workdir` (or starts it) and trains it to config.num_epochs."""
  resuming = ckpts.latest_step() is not None
  if resuming:   # a run that never saved a checkpoint holds nothing to keep consistent with
    _check_resumable(workdir, config)
  splits = input_pipeline.build_splits(config.data)
  steps_per_epoch = input_pipeline.steps_per_epoch(splits, config.batch_size)
  signatures = data_signatures(splits)   # checked on resume, recorded in every checkpoint
  if not steps_per_epoch:
    raise ValueError(
        f'An epoch ({splits.train_epoch_size} training images) is smaller than one batch '
        f'({config.batch_size}): lower batch_size, add photos or raise '
        'config.data.samples_per_epoch.')
  total_steps = steps_per_epoch * config.num_epochs
  meta = {}
  if resuming:
    abstract = steps.abstract_state(gan, config.image_size, parallel.replicated(mesh))
    try:
      state, meta = ckpts.restore(abstract)
    except checkpoints.CorruptCheckpoint as e:
      raise checkpoints.CorruptCheckpoint(
          f'{e} To resume from the checkpoint before it, move '
          f'{ckpts.step_directory(ckpts.latest_step())} '
          'out of that folder (keep it to look at); training goes on from the latest '
          'readable one.') from e
    if meta.get('steps_per_epoch', steps_per_epoch) != steps_per_epoch:
      raise ValueError(
          f'{workdir} was trained with {meta["steps_per_epoch"]} steps per epoch, this config '
          f'gives {steps_per_epoch} (the dataset or batch size changed); use a new --workdir.')
    if meta.get('data') not in (None, signatures['data']):   # None: saved before it
      raise ValueError(
          f'The images of {workdir} changed since it was trained (files added, removed or '
          f'renamed: now {splits.num_train} train / {splits.num_val} val): resuming would '
          'train on other photos in another order. Restore them, or use a new --workdir.')
    if meta.get('data_files') not in (None, signatures['data_files']):
      raise ValueError(
          f'Images of {workdir} were replaced since it was trained (the same names, files '
          'of other sizes): resuming would train on other photos. Restore them, or use a '
          'new --workdir.')
    if state_step(state) >= total_steps and meta.get('epoch_end', True):
      logging.warning('%s is already trained for %d epochs (num_epochs=%d): nothing to do; '
                      'raise num_epochs to train on.', workdir, meta.get('epoch', 0),
                      config.num_epochs)
      return state
    logging.info('Resuming from step %d (epoch %d) in %s.', state_step(state),
                 meta.get('epoch', 0), ckpts.directory)
  else:
    state = parallel.replicate(gan.init(jax.random.PRNGKey(config.seed), config.image_size),
                               mesh)
    logging.info('Starting a new run in %s: %d train / %d val images, %d steps per epoch.',
                 workdir, splits.num_train, splits.num_val, steps_per_epoch)
  # Only now: a relaunch refused above must not change the run's recorded config.
  checkpoints.save_config(workdir, config)
  if jax.process_index() == 0:
    drop_events_after(workdir, state_step(state))
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() != 0, asynchronous=True)
  try:
    return _train_loop(config, workdir, mesh, gan, ckpts, writer, splits, signatures, state,
                       meta, steps_per_epoch)
  finally:
    writer.close()


def drop_events_after(workdir: epath.PathLike, step: int) -> int:
  """Removes what the run's TensorBoard event files hold for steps after `step`.

  A run killed after its last checkpoint logged steps that the resumed run logs
  again: TensorBoard drew both (a zigzag between the two runs' values). Called as a
  run starts from `step`, so that each step's values are the ones of the run that
  reached it. A record cut short by the kill is dropped too. Each file is rewritten
  whole to a temporary file and renamed over the old one.

  Returns:
    How many records were dropped.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
  dropped = 0
  for path in sorted(epath.Path(workdir).glob('events.out.tfevents.*')):
    records, cut = [], False
    try:
      for record in tf.data.TFRecordDataset(os.fspath(path)).as_numpy_iterator():
        records.append(record)
    except tf.errors.DataLossError:   # the last record, cut short by a kill
      cut = True
    keep = [r for r in records if event_pb2.Event.FromString(r).step <= step]
    if len(keep) == len(records) and not cut:
      continue
    dropped += len(records) - len(keep) + cut
    tmp = path.parent / f'.{path.name}.tmp'
    with tf.io.TFRecordWriter(os.fspath(tmp)) as out:
      for record in keep:
        out.write(record)
    os.replace(tmp, path)
  if dropped:
    logging.info('Dropped %d TensorBoard records of steps after %d (logged by a run that '
                 'stopped before its next checkpoint).', dropped, step)
  return dropped


def _train_loop(config, workdir, mesh, gan, ckpts, writer, splits, signatures, state, meta,
                steps_per_epoch) -> steps.GANState:
  """Epochs from `state` to config.num_epochs; see `train_and_evaluate`."""
  total_steps = steps_per_epoch * config.num_epochs
  replicated = parallel.replicated(mesh)
  def meta_of(epoch: int, epoch_end: bool, **more) -> dict[str, Any]:
    """A checkpoint's meta: `epoch` epochs done, saved at an epoch's end or not."""
    return {'epoch': epoch, 'epoch_end': epoch_end, 'steps_per_epoch': steps_per_epoch,
            **signatures, **more}

  train_step = steps.compile_train_step(
      gan, in_shardings=(replicated, parallel.batch_sharded(mesh)),
      out_shardings=(replicated, replicated))
  accumulate = jax.jit(lambda sums, m: jax.tree.map(jnp.add, sums, m), donate_argnums=0)
  validator = _Validator(config, splits, gan, mesh, writer, workdir)

  def end_epoch(state, epoch: int, stop: StopRequested) -> None:
    try:
      results = validator(state, epoch)
    except BaseException:
      # The epoch's training is done: keep it, as a checkpoint that a rerun validates.
      with stop.shielding():
        ckpts.save(state_step(state), state, meta_of(epoch, False))
      raise
    logging.info('Epoch %d/%d: %s', epoch + 1, config.num_epochs,
                 ', '.join(f'{k}={v:.4g}' for k, v in sorted(results.items()))
                 or 'done (no validation images)')
    with stop.shielding():
      ckpts.save(state_step(state), state, meta_of(epoch + 1, True, val=results))

  step = state_step(state)
  progress = tqdm.tqdm(total=total_steps * config.batch_size, initial=step * config.batch_size,
                       unit='img', unit_scale=True, dynamic_ncols=True, smoothing=0.1,
                       disable=jax.process_index() != 0)
  with StopRequested() as stop:
    # Interrupted after an epoch's last step but before its validation and save.
    if step and step % steps_per_epoch == 0 and not meta.get('epoch_end', False):
      end_epoch(state, step // steps_per_epoch - 1, stop)
    while step < total_steps and not stop:
      epoch = step // steps_per_epoch
      batches = input_pipeline.train_batches(
          splits, config.data, image_size=config.image_size, global_batch_size=config.batch_size,
          seed=config.seed, epoch=epoch, start_step=step % steps_per_epoch,
          process_index=jax.process_index(), process_count=jax.process_count())
      sums, count = None, 0
      for local_batch in batches:
        state, step_metrics = train_step(state, parallel.shard_batch(local_batch, mesh))
        sums = step_metrics if sums is None else accumulate(sums, step_metrics)
        step, count = step + 1, count + 1
        progress.update(config.batch_size)
        at_epoch_end = step % steps_per_epoch == 0
        stopping = stop.check(step)
        if count == config.log_every_steps or at_epoch_end or stopping:
          ckpts.check()
          means = _log_train_metrics(writer, step, sums, count)
          progress.set_postfix(g_l1=f'{means["g_l1"]:.3f}', d_loss=f'{means["d_loss"]:.3f}',
                               refresh=False)
          sums, count = None, 0
        if stopping:
          break
      if stop:
        stop.saving = True
        if step % steps_per_epoch:  # else the epoch is ended below, before exiting
          ckpts.save(step, state, meta_of(epoch, False))
          logging.warning('Interrupted at step %d: checkpoint saved. Run the same command to '
                          'resume.', step)
          break
      end_epoch(state, epoch, stop)
    if stop:
      ckpts.wait()   # on disk while the handlers still shield it from a second signal
  progress.close()
  if stop and step < total_steps:
    raise Interrupted(stop.signum, step)
  return state


class Interrupted(Exception):
  """Training stopped on SIGINT / SIGTERM after saving a checkpoint at `step`."""

  def __init__(self, signum: int, step: int):
    super().__init__(f'Interrupted by {signal.Signals(signum).name} at step {step}; a checkpoint '
                     'was saved. Run the same command to resume.')
    self.signum, self.step = signum, step
