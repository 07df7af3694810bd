"""Entry point: `python launch.py MODE --flags`.

  python launch.py train --config experiments/quickstart.py --workdir runs/quickstart
  python launch.py select --workdirs runs/quickstart --metric psnr
  python launch.py colorize --workdir runs/quickstart --best old_photos/ --out colorized/
  python launch.py evaluate --workdir runs/quickstart [--step N] [--data DIR]

colorize, evaluate, select, bench, turing and turing-report take their own options
after the mode (`MODE -h`). Usage errors exit with status 2.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from colorize_jax import cli

config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory of the run: checkpoints, logs, samples.')
flags.DEFINE_string('coordinator_address', None, 'Multi-host: host:port of process 0.')
flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: index of this process.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) < 2 or argv[1] not in cli.MODES:
    problem = f'unknown mode {argv[1]!r}; ' if len(argv) > 1 else 'no mode given; '
    print(f'error: {problem}usage: launch.py {{{"|".join(cli.MODES)}}} [flags] (--help for '
          'more)', file=sys.stderr)
    sys.exit(cli.EXIT_USAGE)
  sys.exit(cli.MODES[argv[1]](FLAGS, argv[2:]))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
