"""The modes of `launch.py`: each takes the parsed absl flags and positional args, returns an exit code."""

import logging as std_logging
import os
import sys

from absl import logging

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


def _require(flags, *names) -> None:
  missing = [f'--{n}' for n in names if getattr(flags, n) is None]
  if missing:
    raise SystemExit(f'error: this mode needs {" and ".join(missing)}')


def train(flags, args) -> int:
  """`launch.py train --config FILE --workdir DIR`: trains (or resumes) a run."""
  del args
  _require(flags, 'config', 'workdir')
  from colorize_jax import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(flags.coordinator_address, flags.num_processes,
                                  flags.process_id)
  setup_runtime()
  from colorize_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  try:
    train_lib.train_and_evaluate(flags.config, flags.workdir)
  except train_lib.Interrupted as e:
    logging.warning('%s', e)
    return 128 + e.signum
  except (train_lib.NonFiniteLossError, ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


MODES = {
    'train': train,
}
