"""cli.keep_host_memory: a program's repeated calls reuse their temporary buffers' pages."""

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from colorize_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A program with one 70 MB temporary buffer (over the 64 MiB a glibc thread arena can
# hold); prints the page faults of one call (median of 5, after 2 warm-up calls).
_PROBE = textwrap.dedent('''
    import json, resource, statistics
    from colorize_jax import cli
    applied = cli.keep_host_memory()
    import jax, jax.numpy as jnp
    a, b = jnp.ones((4200, 8)), jnp.ones((8, 4200))
    f = jax.jit(lambda a, b: jnp.sum(jax.lax.optimization_barrier(a @ b)))
    for _ in range(2):
      f(a, b).block_until_ready()
    faults = []
    for _ in range(5):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      f(a, b).block_until_ready()
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({'applied': applied, 'faults': statistics.median(faults)}))
''')


def _probe(keep: str) -> dict:
  env = {**os.environ, cli.KEEP_HOST_MEMORY_ENV: keep, 'JAX_PLATFORMS': 'cpu'}
  done = subprocess.run([sys.executable, '-c', _PROBE], cwd=ROOT, env=env, check=True,
                        capture_output=True, text=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='a glibc malloc setting')
def test_repeated_calls_stop_faulting_their_temporary_buffers_in():
  """Without it each call maps its 70 MB temporary afresh (~17k 4 KiB page faults);
  with it the second call on reuses the first's pages."""
  default, kept = _probe('0'), _probe('1')
  assert (default['applied'], kept['applied']) == (False, True)
  if default['faults'] < 1000:
    pytest.skip('this kernel backs fresh mappings with huge pages: nothing to save')
  assert kept['faults'] * 10 < default['faults'], (default, kept)


def test_can_be_turned_off(monkeypatch):
  monkeypatch.setenv(cli.KEEP_HOST_MEMORY_ENV, '0')
  assert cli.keep_host_memory() is False
