"""The modes of `launch.py`: each takes the parsed absl flags and positional args, returns an exit code."""

import argparse
import contextlib
import logging as std_logging
import os
import signal
import sys
from typing import Iterator

from absl import logging
import numpy as np

JIT_CACHE_ENV = 'COLORIZE_JAX_JIT_CACHE'


def setup_runtime() -> None:
  """Process-wide settings every mode wants, applied before JAX compiles anything.

  A persistent compilation cache (default ~/.cache/colorize_jax/jit; set
  $COLORIZE_JAX_JIT_CACHE to move it, or to '' to disable it) lets a second launch
  of the same config skip XLA's compilation of the train step.
  """
  import jax  # pylint: disable=g-import-not-at-top
  cache = os.environ.get(JIT_CACHE_ENV, os.path.expanduser('~/.cache/colorize_jax/jit'))
  if cache and jax.config.jax_compilation_cache_dir is None:
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  logging.set_verbosity(logging.INFO)
  # orbax narrates every save at INFO (dozens of lines per checkpoint).
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or 'orbax' not in record.pathname)
  _quiet_orbax_read_failures()


_QUIETED = False


def _quiet_orbax_read_failures() -> None:
  """Silences what orbax leaves behind when reading a damaged checkpoint fails.

  The failure itself is raised (as checkpoints.CorruptCheckpoint) and reported in one
  line; orbax's other pending reads then fail once more in its closed event loop, and
  asyncio and the interpreter printed them too: up to 500 lines of traceback after it.
  """
  global _QUIETED
  if _QUIETED:
    return
  _QUIETED = True

  def leftover(text: str) -> bool:
    return 'orbax' in text or 'tensorstore' in text

  std_logging.getLogger('asyncio').addFilter(
      lambda record: not (record.getMessage().startswith('Task exception was never retrieved')
                          and leftover(record.getMessage())))
  default_hook = sys.unraisablehook

  def hook(unraisable) -> None:
    # TensorStore's read callbacks hand them in with no object (from its own threads) and
    # a traceback inside asyncio only; orbax's coroutines with their code.
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and 'Event loop is closed' in str(unraisable.exc_value)
            and (unraisable.object is None or leftover(repr(unraisable.object) + getattr(
                getattr(unraisable.object, 'cr_code', None), 'co_filename', '')))):
      default_hook(unraisable)

  sys.unraisablehook = hook


def _require(flags, *names) -> None:
  """Exits with the usage status (2) if a flag in `names` was not given."""
  missing = [f'--{n}' for n in names if getattr(flags, n) is None]
  if missing:
    print(f'error: this mode needs {" and ".join(missing)}', file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def train(flags, args) -> int:
  """`launch.py train --config FILE --workdir DIR`: trains (or resumes) a run."""
  if args:
    print(f'error: train takes no positional arguments, got {args}', file=sys.stderr)
    return EXIT_USAGE
  _require(flags, 'config', 'workdir')
  from colorize_jax import parallel  # pylint: disable=g-import-not-at-top
  try:
    parallel.initialize_distributed(flags.coordinator_address, flags.num_processes,
                                    flags.process_id)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  setup_runtime()
  from colorize_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  try:
    train_lib.train_and_evaluate(flags.config, flags.workdir)
  except train_lib.Interrupted as e:
    logging.warning('%s', e)
    return 128 + e.signum
  except (train_lib.NonFiniteLossError, train_lib.input_pipeline.DataReadError, ValueError,
          OSError) as e:   # OSError: a missing file, a full disk (checkpoints.SaveError), ...
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


# Modes that parse their own options (after the mode name) with argparse; absl
# leaves whatever it does not know to them.
_OWN_OPTIONS = ('colorize', 'evaluate', 'select', 'bench', 'turing', 'turing-report')
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
_HELP_FLAGS = ('-h', '--help', '-?', '--helpshort', '--helpfull')
_KEPT_LISTED = 10   # colorize names this many kept outputs, then counts the rest


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing for launch.py: strict, except for modes with their own options.

  For those, flags absl does not know (--out, --step, ...) stay in the returned
  argv for the mode, and --help becomes -h (the mode's own help).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  # The mode is the first argument naming one: global flags may come before it
  # (`launch.py --workdir RUN evaluate --step 6`).
  mode = next((a for a in argv[1:] if a in MODES), None)
  own = mode in _OWN_OPTIONS
  if own:   # the mode's own help, whichever of absl's spellings asked for it
    argv = [a if a not in _HELP_FLAGS else '-h' for a in argv]
  else:
    # absl exits 1 after its help (and knows no -h): help asked for is a success. Not a
    # flag's value given as the next word (`--workdir -h` names a folder).
    def takes_value(word: str) -> bool:
      name = word.lstrip('-')
      return (word.startswith('-') and '=' not in word and name in flags.FLAGS
              and not flags.FLAGS[name].boolean)

    asked = next((a for i, a in enumerate(argv[1:], 1)
                  if a in _HELP_FLAGS and not takes_value(argv[i - 1])), None)
    if asked is not None:
      from absl import app  # pylint: disable=g-import-not-at-top
      app.usage(shorthelp=asked != '--helpfull', writeto_stdout=True, exitcode=EXIT_OK)
  try:
    return flags.FLAGS(argv, known_only=own)
  except (flags.Error, AttributeError, KeyError) as e:
    # ml_collections reports an override of a field the config lacks
    # (--config.batchsize=4) as an AttributeError wrapping a KeyError.
    inner = e.args[0] if e.args and isinstance(e.args[0], Exception) else e
    text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
    if isinstance(inner, KeyError):   # "'foo'" alone (or with ml_collections' suggestion)
      first, *rest = str(text).split('\n')
      key = first.strip('\'"')
      flag = next((a.split('=')[0] for a in argv if a.startswith('--config.')
                   and a.split('=')[0].rsplit('.', 1)[-1] == key), None)
      text = '\n'.join([f'the config has no field {first}' + (f' ({flag})' if flag else '')]
                       + rest)
    sys.stderr.write(f'FATAL Flags parsing error: {text}\n'
                     'Pass --helpshort or --helpfull to see help on flags.\n')
    sys.exit(EXIT_USAGE)


def _step_options(parser) -> None:
  group = parser.add_mutually_exclusive_group()
  group.add_argument('--step', type=int, help='global train step of the checkpoint (default: '
                     'the latest epoch\'s; one saved on an interruption only with --step)')
  group.add_argument('--best', action='store_true',
                     help='the checkpoint `select` recorded in WORKDIR/best.json')


def _inception_options(parser) -> None:
  parser.add_argument('--inception-weights', default='imagenet', metavar='imagenet|FILE|none',
                      help="InceptionV3 weights for IS and FID: Keras' cached ImageNet file "
                      '(default; downloaded if possible), a .h5 / .keras file, or none')
  # Random weights exercise the IS / FID code path in tests; their numbers mean nothing.
  parser.add_argument('--random-inception-weights', action='store_true', help=argparse.SUPPRESS)


def _inception_weights(opts) -> str | None:
  if opts.random_inception_weights:
    return 'random'
  return None if opts.inception_weights.lower() == 'none' else opts.inception_weights


def _int_in(low: int, high: int | None = None):
  """An argparse `type`: an int in [low, high] (no upper bound if high is None)."""
  def parse(text: str) -> int:
    value = int(text)
    if value < low or (high is not None and value > high):
      raise argparse.ArgumentTypeError(
          f'must be >= {low}, got {value}' if high is None else
          f'must be in {low}..{high}, got {value}')
    return value
  parse.__name__ = 'int'   # argparse names the type in "invalid int value: 'x'"
  return parse


_positive, _non_negative, _port = _int_in(1), _int_in(0), _int_in(0, 65535)


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[list[signal.Signals]]:
  """Makes SIGTERM raise KeyboardInterrupt, as SIGINT does, while in the block.

  Yields a list that holds the signal that came, once one has (SIGINT if empty).
  """
  received = []

  def handle(signum, frame):
    del frame
    received.append(signal.Signals(signum))
    raise KeyboardInterrupt

  previous = signal.signal(signal.SIGTERM, handle)
  try:
    yield received
  finally:
    signal.signal(signal.SIGTERM, previous)


def colorize(flags, args) -> int:
  """`launch.py colorize --workdir RUN [--step N | --best] INPUT... --out DIR`: photos -> PNGs.

  Exit code: 0 every output written or already there (a rerun of a finished or
  interrupted run); 1 some inputs were unreadable or missing, or their output's
  name is taken by a file colorize did not write, another photo's colorization or one
  edited since (the others are written); 2 nothing done (bad options, no checkpoint, no
  inputs, an --out that cannot be written, --out would overwrite an input); 128 + signal
  number when stopped by SIGINT / SIGTERM (what was written is complete: a rerun
  finishes the rest).
  """
  from colorize_jax import files  # pylint: disable=g-import-not-at-top
  from colorize_jax import images  # pylint: disable=g-import-not-at-top
  from colorize_jax import inference  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog='launch.py colorize --workdir RUN',
      description='Colorizes photos of any size: the model colours a render-size copy, its '
      'colours are resized to the photo and joined with its full-resolution lightness. '
      'Writes OUT/<path relative to the inputs>.png; inputs are never overwritten, and '
      'existing files only with --overwrite, if colorize wrote them.',
      epilog='Exit status: 0 every output written or already there; 1 some inputs unreadable '
      'or missing, or their output name taken by a file colorize did not write, another '
      'photo\'s colorization or one edited since (the rest are written); 2 nothing done '
      '(bad options, no checkpoint, no inputs, an --out that cannot be written, --out '
      'would overwrite an input); 130 / 143 stopped by SIGINT / SIGTERM (rerun to finish).')
  parser.add_argument('inputs', nargs='+', metavar='INPUT', help='files, folders, globs')
  parser.add_argument('--out', required=True, help='output folder')
  _step_options(parser)
  parser.add_argument('--render-size', type=_positive,
                      help="the generator's square input size: the training size (default) "
                      'or any multiple of it, e.g. twice it for large photos')
  parser.add_argument('--saturation', type=float, default=1.0,
                      help='factor on the predicted colours (ab); 1 = as predicted')
  parser.add_argument('--batch-size', type=_positive, default=inference.BATCH_SIZE,
                      help='render-size images per generator call; twice this many photos '
                      'are held in memory at 4 bytes a pixel: lower it for very large scans')
  parser.add_argument('--aspect', choices=inference.ASPECT_MODES,
                      default=inference.ASPECT_MODES[0],
                      help='how a non-square photo meets the square model (default '
                      f'{inference.ASPECT_MODES[0]})')
  parser.add_argument('--png-compression', type=int, default=images.PNG_COMPRESS_LEVEL,
                      choices=range(10), metavar='0..9',
                      help=f'zlib level of the output PNGs (default {images.PNG_COMPRESS_LEVEL}); '
                      '1: a 12 MP photo in 60%% of the time, files 40-60%% larger')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace outputs that an earlier colorize wrote (default: keep '
                      'them and leave their inputs out, so a rerun finishes an interrupted '
                      'one); other files, such as photos of yours, are always kept')
  parser.add_argument('--no-progress', action='store_true', help='no progress bar')
  opts = parser.parse_args(args)  # a bad option exits 2 with the usage line
  if flags.workdir is None:
    print('error: colorize needs --workdir (the training run)', file=sys.stderr)
    return EXIT_USAGE
  setup_runtime()
  try:
    inference.check_saturation(opts.saturation)
  except ValueError as e:
    print(f'error: --{e}', file=sys.stderr)
    return EXIT_USAGE
  try:
    jobs, missing = inference.plan_jobs(opts.inputs, opts.out)
  except inference.OverwriteError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  for arg, reason in missing:
    print(f'error: {arg}: {reason}', file=sys.stderr)
  if not jobs:
    print('error: no input images found', file=sys.stderr)
    return EXIT_USAGE
  made_out = not os.path.lexists(opts.out)
  try:
    # The checkpoint is found before --out is made: a wrong --workdir leaves nothing behind.
    step = inference.resolve_step(flags.workdir, 'best' if opts.best else opts.step)
    files.check_writable(opts.out, 'the colorized images (--out)')
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  kept, foreign = [], []   # outputs there already; what may not be written over
  for job in jobs:
    # An edit is looked for only where it would be lost: a rerun without --overwrite
    # keeps every output and need not read each one whole.
    holds = inference.destination_holds(job, replacing=opts.overwrite)
    if holds == 'nothing':
      continue
    if holds == 'a file colorize did not write':
      foreign.append(job)
      print(f'not colorized: {job.source}: its output {job.destination} exists and colorize '
            'did not write it (a photo of yours, or an output of a version that did not mark '
            'them): it is never replaced; move it, or choose another --out', file=sys.stderr)
    elif holds == 'another colorization':   # cameras repeat names: IMG_0001.JPG
      foreign.append(job)
      print(f'not colorized: {job.source}: its output {job.destination} is the colorization '
            'of another photo: it is never replaced; choose another --out', file=sys.stderr)
    elif holds == 'an edited colorization':   # an editor that keeps PNG text kept the mark
      foreign.append(job)
      print(f'not colorized: {job.source}: its output {job.destination} was edited since '
            'colorize wrote it: it is never replaced; move it, or choose another --out',
            file=sys.stderr)
    elif not opts.overwrite:
      kept.append(job)
      if len(kept) <= _KEPT_LISTED:   # a rerun of a big folder would list thousands
        print(f'kept: {job.destination} exists (--overwrite replaces it); {job.source} left '
              'out', file=sys.stderr)
  if len(kept) > _KEPT_LISTED:
    print(f'kept: {len(kept) - _KEPT_LISTED} more outputs that exist (--overwrite replaces '
          'them)', file=sys.stderr)
  left_out = {id(job) for job in kept + foreign}
  jobs = [job for job in jobs if id(job) not in left_out]
  if not jobs:
    print(f'nothing to do: all {len(kept) + len(foreign)} outputs exist in {opts.out}' +
          (' (--overwrite replaces those colorize wrote)' if kept else ''))
    return EXIT_PARTIAL if missing or foreign else EXIT_OK
  try:
    colorizer = inference.Colorizer.from_workdir(
        flags.workdir, step, render_size=opts.render_size, batch_size=opts.batch_size,
        aspect=opts.aspect)
  except (FileNotFoundError, ValueError) as e:   # a damaged checkpoint, say
    print(f'error: {e}', file=sys.stderr)
    if made_out and not os.listdir(opts.out):
      os.rmdir(opts.out)
    return EXIT_USAGE
  logging.info('Colorizing %d images with step %d of %s at %dx%d.', len(jobs), colorizer.step,
               colorizer.workdir, colorizer.render_size, colorizer.render_size)
  try:
    with _signals_as_interrupts() as received:
      summary = colorizer.colorize_files(jobs, opts.saturation, progress=not opts.no_progress,
                                         png_compress_level=opts.png_compression)
  except KeyboardInterrupt:
    # Every PNG appears whole or not at all (images.save_png), so a rerun can skip them.
    stop = (received or [signal.SIGINT])[0]
    print(f'interrupted by {stop.name}: the images in {opts.out} are complete; rerun the '
          'same command to colorize the rest (outputs already there are kept)', file=sys.stderr)
    return 128 + stop.value
  for source, note in summary.notes:
    print(f'note: {source}: {note}', file=sys.stderr)
  for source, reason in summary.failed:
    print(f'skipped: {reason}', file=sys.stderr)
  failed = len(summary.failed) + len(missing) + len(foreign)
  print(f'{len(summary.written)} images written to {opts.out}' +
        (f'; {failed} inputs failed (listed above)' if failed else '') +
        (f'; {len(kept)} outputs were there already and kept' if kept else ''))
  return EXIT_PARTIAL if failed else EXIT_OK


def _print_columns(table: list[list[str]]) -> None:
  widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
  for row in table:
    print('  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def evaluate(flags, args) -> int:
  """`launch.py evaluate --workdir RUN [--step N | --best] [--data DIR]`: metrics + report.

  Exit code: 0 done (IS / FID may be missing, the report says why); 2 bad
  options, no such run or checkpoint, a damaged checkpoint, a run whose eval/
  folder cannot be written, a --data folder that cannot be read, or no usable
  evaluation images.
  """
  parser = argparse.ArgumentParser(
      prog='launch.py evaluate --workdir RUN',
      description='Evaluates one checkpoint on the run\'s validation split (or --data DIR) '
      'against the gray baseline and the real photos; writes metrics.json and report.html to '
      'RUN/eval/<data>/step_<N>[-<weights>]/.',
      epilog='Exit status: 0 done (IS / FID may be missing: the report says why); 2 bad '
      'options, no such run or checkpoint, a damaged checkpoint, a run whose eval/ folder '
      'cannot be written, a --data folder that cannot be read, or no usable evaluation '
      'images.')
  _step_options(parser)
  parser.add_argument('--data', help='a folder of colour photos to evaluate on instead')
  parser.add_argument('--max-images', type=_positive, help='only the first N images')
  _inception_options(parser)
  parser.add_argument('--no-cache', action='store_true',
                      help='recompute even if metrics.json has results for the same key')
  opts = parser.parse_args(args)  # a bad option exits 2 with the usage line
  if flags.workdir is None:
    print('error: evaluate needs --workdir (the training run)', file=sys.stderr)
    return EXIT_USAGE
  setup_runtime()
  from colorize_jax import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  try:
    result = evaluate_lib.evaluate(
        flags.workdir, 'best' if opts.best else opts.step, data_dir=opts.data,
        max_images=opts.max_images, inception_weights=_inception_weights(opts),
        use_cache=not opts.no_cache)
  except (FileNotFoundError, PermissionError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  print(f'Step {result["step"]} (epoch {result["epoch"]}) on {result["num_images"]} images of '
        f'the {result["data"]}:')
  _print_columns(evaluate_lib.metric_table(result))
  by_reason = {}   # IS and FID miss for one reason: say it once
  for name, reason in result.get('unavailable', {}).items():
    by_reason.setdefault(reason, []).append(name)
  for reason, names in by_reason.items():
    print(f'{" and ".join(names)} missing: {reason}')
  print(f'Report: {os.path.join(result["dir"], "report.html")}')
  return EXIT_OK


def select(flags, args) -> int:
  """`launch.py select --workdirs RUN... [--metric M] [--top K]`: ranks every checkpoint.

  Exit code: 0 done; 1 done, but some checkpoints were unreadable (damaged) and
  left out; 2 bad options, a run without checkpoints, a folder that cannot be
  written, or a metric that cannot be computed (IS / FID without Inception
  weights) and no --fallback-metric.
  """
  from colorize_jax import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog='launch.py select',
      description='The paper\'s selection (sec. 4): evaluates every saved checkpoint of every '
      'run (results cached in RUN/eval/), ranks them, writes a leaderboard (md, csv, html) and '
      'records each run\'s best checkpoint in RUN/best.json for `colorize --best`.',
      epilog='Exit status: 0 done; 1 done, but damaged checkpoints were left out (listed); 2 '
      'bad options, a run without checkpoints, a folder that cannot be written, or a metric '
      'that cannot be computed (IS / FID without Inception weights) and no --fallback-metric.')
  parser.add_argument('--workdirs', nargs='+', default=[], metavar='RUN',
                      help='the runs (or one --workdir)')
  parser.add_argument('--metric', default='inception_score', choices=list(evaluate_lib.METRICS),
                      help='ranking metric (default inception_score, as the paper)')
  parser.add_argument('--fallback-metric', choices=list(evaluate_lib.METRICS),
                      help='rank by this if --metric cannot be computed')
  parser.add_argument('--top', type=_positive, default=12, help='top K shown with thumbnails')
  parser.add_argument('--out', help='leaderboard folder (default: '
                      '<parent of the first run>/selection_<metric>)')
  parser.add_argument('--data', help='a folder of colour photos to evaluate every run on')
  parser.add_argument('--max-images', type=_positive, help='only the first N images')
  _inception_options(parser)
  parser.add_argument('--no-cache', action='store_true', help='re-evaluate every checkpoint')
  opts = parser.parse_args(args)  # a bad option exits 2 with the usage line
  workdirs = opts.workdirs + ([flags.workdir] if flags.workdir else [])
  if not workdirs:
    print('error: select needs --workdirs RUN... (or --workdir RUN)', file=sys.stderr)
    return EXIT_USAGE
  setup_runtime()
  try:
    evaluator = evaluate_lib.Evaluator(_inception_weights(opts), data_dir=opts.data,
                                       max_images=opts.max_images)
    selection = evaluate_lib.select(workdirs, opts.metric, top=opts.top, out_dir=opts.out,
                                    evaluator=evaluator, fallback_metric=opts.fallback_metric,
                                    use_cache=not opts.no_cache)
  except (evaluate_lib.MetricUnavailable, FileNotFoundError, PermissionError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  print(f'{len(selection.ranking)} checkpoints ranked by {selection.metric} '
        f'({len(selection.evaluated)} evaluated now, {len(selection.cached)} from the cache):')
  _print_columns(evaluate_lib.leaderboard_table(selection.ranking[:opts.top], selection.metric))
  print(f'Leaderboard: {os.path.join(selection.out_dir, "leaderboard.html")}')
  for workdir, step, reason in selection.unreadable:
    print(f'left out: step {step} of {workdir}: {reason}', file=sys.stderr)
  return EXIT_PARTIAL if selection.unreadable else EXIT_OK


def bench(flags, args) -> int:
  """`launch.py bench --config FILE [--out FILE] [--steps N] [--parts ...]`: speed and memory."""
  parser = argparse.ArgumentParser(prog='launch.py bench', description=bench.__doc__)
  parser.add_argument('--out', default=None, help='JSONL file the records are appended to.')
  parser.add_argument('--steps', type=_positive, default=10, help='timed train steps')
  parser.add_argument('--warmup', type=_non_negative, default=2,
                      help='untimed calls before timing')
  parser.add_argument('--parts', default='train,infer,photo,pipeline,peak',
                      help='comma-separated subset of train,infer,photo,pipeline,peak, '
                      'or layers (each conv layer\'s formulations timed, not by default)')
  opts = parser.parse_args(args)
  _require(flags, 'config')
  if opts.out is not None:
    try:   # before the first part runs, not after it
      with open(opts.out, 'a'):
        pass
    except OSError as e:
      print(f'error: cannot write --out {opts.out!r}: {e.strerror or e}', file=sys.stderr)
      return EXIT_USAGE
  setup_runtime()
  from colorize_jax import bench as bench_lib  # pylint: disable=g-import-not-at-top
  try:
    bench_lib.run(flags.config, num_steps=opts.steps, warmup=opts.warmup,
                  parts=tuple(p.strip() for p in opts.parts.split(',') if p.strip()),
                  out_path=opts.out)
  except bench_lib.PartsFailed as e:
    print(f'error: {len(e.errors)} benchmark part(s) failed ({", ".join(e.errors)})' +
          ('; the other parts ran and their records were kept' if e.records else ''),
          file=sys.stderr)
    return EXIT_PARTIAL
  except (ValueError, OSError) as e:   # OSError: a --config file that cannot be read
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  return EXIT_OK


def _study_photos(config, data_dir: str | None, count: int, size: int, seed: int):
  """`count` validation photos (or --data photos) picked with `seed`, as (name, rgb uint8
  [size, size, 3]), and the data's description; only the picked ones are decoded."""
  from colorize_jax import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  from colorize_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from colorize_jax import turing as turing_lib  # pylint: disable=g-import-not-at-top
  data = evaluate_lib.folder_data(data_dir) if data_dir else evaluate_lib.validation_data(config)
  candidates, _ = data.images()
  # The same photo twice in a study is one pair answered twice, and a giveaway.
  candidates, repeats = candidates.distinct()
  if repeats:
    print(f'note: left out {len(repeats)} photos that repeat others byte for byte (e.g. '
          f'{repeats[0][0]} = {repeats[0][1]})', file=sys.stderr)
  if count > len(candidates):
    raise ValueError(f'--pairs {count}: the {data.description} holds {len(candidates)} usable '
                     'photos; ask for fewer pairs, or pass --data DIR (a folder of colour photos '
                     'the model was not trained on).')
  # The same pick build_study would make from all of them: --seed chooses among them all.
  image_set = candidates.subset(turing_lib.select_photos(len(candidates), count, seed))
  splits = input_pipeline.Splits(train=image_set, val=image_set, train_epoch_size=0, stats={})
  photos = []
  for batch in input_pipeline.val_batches(splits, image_size=size, global_batch_size=8):
    photos.extend(batch['image'][batch['mask']])
  return list(zip(image_set.names, photos)), data.description


def turing(flags, args) -> int:
  """`launch.py turing --workdir RUN [--step N | --best] [--pairs 20] [--data DIR] [--port 8000]`.

  Builds (once) and serves the paper's Turing test: pairs of a real photo and the
  model's colorization of its grayscale, "click the generated one".
  """
  parser = argparse.ArgumentParser(
      prog='launch.py turing --workdir RUN',
      description='Builds a Turing-test study (paper sec. 4) from validation photos (or --data '
      'DIR) and the model\'s colorizations of their grayscale, then serves it. The study lives '
      'in RUN/turing/step_<N>/ (or --study DIR); rerunning serves it again with its answers.')
  _step_options(parser)
  parser.add_argument('--pairs', type=_positive, default=20, help='pairs of images (paper: 20)')
  parser.add_argument('--data', help='a folder of colour photos instead of the validation split')
  parser.add_argument('--size', type=_positive, default=256,
                      help='side of the square photos shown (default 256, as in the paper)')
  parser.add_argument('--seed', type=int, default=0, help='which photos are picked')
  parser.add_argument('--study', help='the study folder (default RUN/turing/step_<N>)')
  parser.add_argument('--rebuild', action='store_true',
                      help='replace an existing study (its answers are moved to STUDY/replaced/, '
                      'not deleted; refused while the study is served)')
  parser.add_argument('--host', default='127.0.0.1', help='interface (default: loopback only)')
  parser.add_argument('--port', type=_port, default=8000,
                      help='TCP port (default 8000; 0: any free one, printed)')
  parser.add_argument('--no-serve', action='store_true', help='build the study and exit')
  opts = parser.parse_args(args)
  if flags.workdir is None:
    print('error: turing needs --workdir (the training run)', file=sys.stderr)
    return EXIT_USAGE
  setup_runtime()
  from colorize_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from colorize_jax import inference  # pylint: disable=g-import-not-at-top
  from colorize_jax import turing as turing_lib  # pylint: disable=g-import-not-at-top
  try:
    colorizer = inference.Colorizer.from_workdir(flags.workdir, 'best' if opts.best else opts.step)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  study_dir = opts.study or os.path.join(flags.workdir, 'turing', f'step_{colorizer.step}')
  # The save of the step too: a run retrained from an earlier step has other weights there.
  model = {'workdir': os.path.abspath(flags.workdir), 'step': int(colorizer.step),
           'checkpoint': checkpoints.commit_id(flags.workdir, colorizer.step)}
  if not opts.rebuild and turing_lib.holds_study(study_dir):
    try:
      study = turing_lib.load_study(study_dir)
    except turing_lib.StudyError as e:
      print(f'error: {e}. `--rebuild` replaces the study (its answers are moved to '
            f'{os.path.join(study_dir, "replaced")}/, not deleted).', file=sys.stderr)
      return EXIT_USAGE
    built_with = {k: study.about.get(k) for k in model}
    if 'checkpoint' not in study.about:   # built before studies recorded it
      built_with['checkpoint'] = model['checkpoint']
    if study.about and built_with != model:
      again = ' (saved again since: the run was retrained from an earlier step)' if (
          built_with['step'] == model['step'] and built_with['workdir'] == model['workdir']) else ''
      print(f'error: {study_dir} holds a study of step {built_with["step"]} of '
            f'{built_with["workdir"]}{again}, not of step {model["step"]} of {model["workdir"]} '
            'as it is now: pass --rebuild to replace it (its answers are kept aside), or '
            'another --study.', file=sys.stderr)
      return EXIT_USAGE
    print(f'The study in {study_dir} exists: {"serving" if not opts.no_serve else "kept"} it '
          'as it is (--pairs, --size, --seed and --data build a new one only with --rebuild).')
  else:
    try:
      photos, description = _study_photos(checkpoints.load_config(flags.workdir), opts.data,
                                          opts.pairs, opts.size, opts.seed)
      study = turing_lib.build_study(
          photos, lambda batch: np.stack(colorizer.colorize_batch(list(batch))), study_dir,
          num_pairs=opts.pairs, seed=opts.seed, batched=True, overwrite=opts.rebuild,
          about={**model, 'photos': description, 'size': opts.size})
    except (FileNotFoundError, FileExistsError, ValueError) as e:
      print(f'error: {e}', file=sys.stderr)
      return EXIT_USAGE
    print(f'Built a study of {study.num_pairs} pairs from the {description} with step '
          f'{colorizer.step} in {study_dir}.')
  if not opts.no_serve:
    try:
      turing_lib.serve(study_dir, host=opts.host, port=opts.port)
    except (turing_lib.StudyError, OSError) as e:
      print(f'error: {e}', file=sys.stderr)
      return EXIT_USAGE
    except KeyboardInterrupt:   # uvicorn shuts down, then passes Ctrl-C on
      print(f'Stopped serving {study_dir}: its answers are stored; the same command serves '
            'it again.', file=sys.stderr)
      return 128 + signal.SIGINT.value
  return EXIT_OK


def turing_report(flags, args) -> int:
  """`launch.py turing-report --study DIR | --workdir RUN [--step N]`: the study's results."""
  parser = argparse.ArgumentParser(
      prog='launch.py turing-report',
      description='Fool rate with a 95% Wilson interval, per-pair and per-participant counts, '
      'the paper\'s and Zhang et al.\'s figures for reference; writes results.html and '
      'answers.csv to <study>/report/.')
  parser.add_argument('--study', help='the study folder (default: the only one under RUN/turing)')
  parser.add_argument('--step', type=int, help='with --workdir: the study of this step')
  opts = parser.parse_args(args)
  from colorize_jax import turing as turing_lib  # pylint: disable=g-import-not-at-top
  study_dir = opts.study
  if study_dir is None:
    if flags.workdir is None:
      print('error: turing-report needs --study DIR or --workdir RUN', file=sys.stderr)
      return EXIT_USAGE
    root = os.path.join(flags.workdir, 'turing')
    available = sorted(d for d in (os.listdir(root) if os.path.isdir(root) else [])
                       if turing_lib.holds_study(os.path.join(root, d)))
    found = available
    if opts.step is not None:
      found = [f for f in available if f == f'step_{opts.step}']
      if not found:
        print(f'error: no study for step {opts.step} under {root}; there are: '
              f'{", ".join(available) or "none (build one with `launch.py turing`)"}',
              file=sys.stderr)
        return EXIT_USAGE
    if len(found) != 1:
      print(f'error: {len(found)} studies under {root} ({", ".join(found) or "none"}); '
            'pass --study DIR or --step N', file=sys.stderr)
      return EXIT_USAGE
    study_dir = os.path.join(root, found[0])
  try:
    result = turing_lib.write_report(study_dir)
  except turing_lib.StudyError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  overall = result['overall']
  if not overall['answers']:
    print('No completed participant yet (only those who answered every pair count).')
  else:
    low, high = overall['ci95']
    print(f'Fooled {overall["fooled"]} of {overall["answers"]} answers: {overall["rate"]:.1%} '
          f'(95% Wilson interval {low:.1%} to {high:.1%}); paper '
          f'{turing_lib.stats.PAPER_FOOL_RATE:.0%}, Zhang et al. '
          f'{turing_lib.stats.ZHANG_FOOL_RATE:.0%}, indistinguishable 50%.')
  print(f'Report: {result["files"]["html"]}')
  return EXIT_OK


MODES = {
    'train': train,
    'colorize': colorize,
    'evaluate': evaluate,
    'select': select,
    'bench': bench,
    'turing': turing,
    'turing-report': turing_report,
}
