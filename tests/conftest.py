"""Test-session settings that must be in place before JAX is imported."""

import os
import tempfile

# Tests check what programs compute, not how fast; XLA's LLVM optimisation of
# fused elementwise kernels triples compile time of the tiny U-Nets the tests use
# (convolutions and matmuls are library calls and unaffected).
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0').strip()
# One compilation cache for the session, shared with the subprocesses tests start,
# so a program compiled in one test (or process) is not compiled again in another.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      tempfile.mkdtemp(prefix='colorize_jax_test_jit_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
