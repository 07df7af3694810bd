"""Speed and memory of training, inference, a 12-megapixel photo and the input pipeline.

  python launch.py bench --config experiments/default.py --config.image_size=128 \
      --config.batch_size=16 --config.model.width=32 [--out bench.jsonl]

Prints one JSON line per measurement and appends them to `--out`. Step times are
medians over timed calls after warm-up; compilation is timed apart. FLOPs come
from XLA's cost analysis of the compiled programs: what XLA actually runs, which is
less than the model's 3 G + 9 D forward-equivalents per training image, because the
generator update does not form the discriminator's weight gradient (3 G + 8 D) and
the discriminator's stride-1 layer runs Winograd's algorithm (`layers`).

`run_peer_format` prints the one-line result format of ../shared/bench (the
PyTorch and Keras implementations of the same GAN), so that `run_all.py --extra`
can time this implementation in the same run as the peers:

  python -m colorize_jax.bench --size 128 --batch 16 --width 32   # ../shared/bench flags
"""

import argparse
import collections
import functools
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from colorize_jax import color
from colorize_jax import layers
from colorize_jax import parallel
from colorize_jax import steps

TWELVE_MEGAPIXELS = (3000, 4000)  # H, W of a 4:3 12 MP photo


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_peak_mb() -> float | None:
  """Peak memory in use on device 0, MiB, where the backend reports it (GPUs)."""
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else peak / 2 ** 20


def time_calls(fn: Callable[[], Any], steps: int, warmup: int,
               max_seconds: float = 120.0) -> list[float]:
  """Seconds of each timed call of `fn` (which must block until done), after `warmup`
  untimed calls. `steps` calls are timed, fewer (but at least min(steps, 3)) if they
  take longer than `max_seconds` in all."""
  for _ in range(warmup):
    fn()
  times, start = [], time.perf_counter()
  while len(times) < steps and (len(times) < 3 or time.perf_counter() - start < max_seconds):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return times


def _flops(compiled, inputs: jax.Array) -> float:
  """FLOPs of one call of `compiled` on all the devices `inputs` is sharded over.

  XLA's cost analysis counts one device's program (each computes its share of the
  batch), so per image it is that count times the devices over the global batch; work
  every device repeats (a train step's update of the replicated weights) counts once
  per device.
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float((analysis or {}).get('flops', 0.0)) * len(inputs.sharding.device_set)


def _sig(x: float, digits: int = 4) -> float:
  """`x` to `digits` significant digits (records stay readable at any scale)."""
  return float(f'{x:.{digits}g}')


def _summary(what: str, batch: int, times: list[float], compile_s: float,
             compile_cache: str, flops_per_call: float) -> dict[str, Any]:
  median = statistics.median(times)
  out = {'what': what, 'images_per_s': _sig(batch / median),
         'step_s_median': _sig(median), 'step_s_min': _sig(min(times)),
         'steps_timed': len(times), 'compile_s': round(compile_s, 2),
         'compile_cache': compile_cache}
  if flops_per_call:
    out['gflop_per_image'] = _sig(flops_per_call / batch / 1e9)
    out['achieved_gflops'] = _sig(flops_per_call / median / 1e9)
  return out


class _Programs(NamedTuple):
  """Inputs on a mesh, the jitted programs to time, and fresh model states."""
  new_state: Callable[[], steps.GANState]   # replicated; the train step donates it
  batch: dict[str, Any]       # {'image': uint8 [B, S, S, 3]}, random photos, batch-sharded
  l_norm: jax.Array           # float32 [B, S, S, 1] in [-1, 1], their L, batch-sharded
  train_step: Callable[..., Any]
  generate: Callable[..., Any]
  prepare: Callable[[steps.NetState], steps.PreparedNet]   # the generator, for `generate`


def _programs(gan: steps.GAN, size: int, batch_size: int, mesh: jax.sharding.Mesh,
              seed: int = 0) -> _Programs:
  """What both `run` and `run_peer_format` time: the train step (state donated) and the
  generator's forward pass in evaluation mode, on random inputs already on the devices.
  Inference runs the generator as `inference.Colorizer` does: prepared once
  (`steps.prepare_generator`; its one-off time is reported apart)."""
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  new_state = lambda: parallel.replicate(gan.init(jax.random.PRNGKey(seed), size), mesh)
  images = np.random.default_rng(seed).integers(0, 256, (batch_size, size, size, 3), np.uint8)
  batch = parallel.shard_batch({'image': images}, mesh)
  l_norm, _ = color.rgb_to_model_inputs(batch['image'])
  train_step = steps.compile_train_step(gan, in_shardings=(replicated, sharded),
                                        out_shardings=(replicated, replicated))
  generate = steps.jit(lambda g, l: steps.generate_ab(gan, g, l),
                       in_shardings=(replicated, sharded), out_shardings=replicated)
  prepare = lambda generator: steps.prepare_generator(gan, generator, size)
  return _Programs(new_state, batch, l_norm, train_step, generate, prepare)


# JAX's persistent compilation cache reports through jax.monitoring events.
_CACHE_EVENTS: collections.Counter = collections.Counter()
_CACHE_EVENT_PREFIX = '/jax/compilation_cache/'


@functools.cache
def _count_cache_events() -> None:
  """Starts counting the compilation cache's events (once per process)."""
  def listen(event: str, **kwargs) -> None:
    del kwargs
    if event.startswith(_CACHE_EVENT_PREFIX):
      _CACHE_EVENTS[event[len(_CACHE_EVENT_PREFIX):]] += 1
  jax.monitoring.register_event_listener(listen)


def _compiled(jitted, *args):
  """(the compiled program, seconds it took, how it was obtained): 'hit' from the
  persistent compilation cache, 'miss' compiled by XLA (minutes at 256px, where a hit
  takes seconds), 'memory' already compiled in this process, 'off' no cache folder
  configured (compiled by XLA)."""
  _count_cache_events()
  before = dict(_CACHE_EVENTS)
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - start
  new = {k: v - before.get(k, 0) for k, v in _CACHE_EVENTS.items()}
  if jax.config.jax_compilation_cache_dir is None:
    cache = 'off'
  elif not new.get('compile_requests_use_cache'):
    cache = 'memory'
  else:
    cache = 'hit' if new.get('cache_hits') and not new.get('cache_misses') else 'miss'
  return compiled, seconds, cache


def bench_train(programs: _Programs, num_steps: int, warmup: int) -> dict[str, Any]:
  """Train-step throughput on random uint8 photos already on the device."""
  state = programs.new_state()
  compiled, compile_s, cache = _compiled(programs.train_step, state, programs.batch)
  box = [state]

  def step():
    box[0], metrics = compiled(box[0], programs.batch)
    jax.block_until_ready(metrics)

  times = time_calls(step, num_steps, warmup)
  return _summary('train', len(programs.l_norm), times, compile_s, cache,
                  _flops(compiled, programs.l_norm))


def bench_infer(programs: _Programs, num_steps: int, warmup: int) -> dict[str, Any]:
  """Generator forward (evaluation mode) throughput at the training size."""
  start = time.perf_counter()
  generator = jax.block_until_ready(programs.prepare(programs.new_state().generator))
  prepare_s = time.perf_counter() - start
  compiled, compile_s, cache = _compiled(programs.generate, generator, programs.l_norm)
  times = time_calls(lambda: jax.block_until_ready(compiled(generator, programs.l_norm)),
                     2 * num_steps, warmup)
  return {**_summary('infer', len(programs.l_norm), times, compile_s, cache,
                     _flops(compiled, programs.l_norm)),
          'prepare_s': round(prepare_s, 2)}


_CONV_LAYERS = (layers.Conv4x4S2, layers.ConvTranspose4x4S2, layers.Conv4x4S1)


def conv_layers(gan: steps.GAN, size: int, batch_size: int) -> list[dict[str, Any]]:
  """Every 4x4 conv layer the train step runs: [{'net', 'layer', 'op', 'x_shape',
  'kernel_shape', 'dtype'}] in call order (the discriminator's once), found by tracing
  the nets' shapes (nothing is computed)."""
  found = []

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, _CONV_LAYERS) and context.method_name == '__call__':
      x = args[0]
      found.append({'layer': module.name, 'op': module.op, 'x_shape': tuple(x.shape),
                    'kernel_shape': (layers.KERNEL_SIZE, layers.KERNEL_SIZE, x.shape[-1],
                                     module.features),
                    'dtype': str(jax.numpy.dtype(module.dtype or x.dtype))})
    return next_fun(*args, **kwargs)

  l_norm = jax.ShapeDtypeStruct((batch_size, size, size, 1), np.float32)
  ab_norm = jax.ShapeDtypeStruct((batch_size, size, size, 2), np.float32)
  rng = jax.random.PRNGKey(0)
  for net, module, inputs in (('generator', gan.generator, (l_norm,)),
                              ('discriminator', gan.discriminator, (l_norm, ab_norm))):
    start = len(found)
    with nn.intercept_methods(record):
      jax.eval_shape(functools.partial(module.init, train=False), rng, *inputs)
    for entry in found[start:]:
      entry['net'] = net
  return found


def bench_layers(gan: steps.GAN, size: int, batch_size: int, repeats: int = 7,
                 warmup: int = 1) -> list[dict[str, Any]]:
  """Forward pass, input gradient and kernel gradient of every formulation of every conv
  layer, timed interleaved (median of `repeats` rounds, in ms), beside the plan 'fast'
  uses: where another formulation is faster on this machine, the plan rules in `layers`
  (measured on other CPUs) may want re-measuring. One record per layer.

  These are layers alone: inside the whole program XLA fuses their padding and layout
  copies with their neighbours and runs independent ops side by side, so confirm a
  change with the 'train' and 'infer' parts (e.g. Winograd's discriminator layer: alone,
  its forward pass and kernel gradient ran 0.83-0.88x as fast as Eigen's convolution on
  a Zen 4 CPU, yet it made the whole train step 1.12x faster there).
  """
  rng = np.random.default_rng(0)
  options = layers.xla_cpu_compiler_options(os.environ.get('XLA_FLAGS', ''))
  records = []
  for entry in conv_layers(gan, size, batch_size):
    op, dtype = entry['op'], jax.numpy.dtype(entry['dtype'])
    x = jax.numpy.asarray(rng.standard_normal(entry['x_shape']), dtype)
    kernel = jax.numpy.asarray(rng.standard_normal(entry['kernel_shape']) * 0.05, dtype)
    # Not the lhs-dilated 'plain' transposed conv: 30x slower than the rest (layers).
    forms = {name: f for name, f in layers.formulations(op).items() if (op, name) != ('t', 'plain')}
    y_shape = jax.eval_shape(layers.formulations(op)['plain'], x, kernel).shape
    g = jax.numpy.asarray(rng.standard_normal(y_shape), dtype)
    plan = layers.plan_for(op, x.shape, kernel.shape, dtype)
    programs = {}
    for name, f in forms.items():
      programs[('fwd', name)] = lambda x, k, g, f=f: f(x, k)
      programs[('dx', name)] = lambda x, k, g, f=f: jax.vjp(lambda x_: f(x_, k), x)[1](g)[0]
      programs[('dw', name)] = lambda x, k, g, f=f: jax.vjp(lambda k_: f(x, k_), k)[1](g)[0]
    compiled = {key: jax.jit(fn, compiler_options=options).lower(x, kernel, g).compile()
                for key, fn in programs.items()}
    times = {key: [] for key in compiled}
    for round_ in range(warmup + repeats):
      for key, fn in compiled.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(x, kernel, g))
        if round_ >= warmup:
          times[key].append(time.perf_counter() - start)
    record = {'what': 'layer', **entry, 'x_shape': list(entry['x_shape']),
              'kernel_shape': list(entry['kernel_shape']), 'plan': list(plan)}
    for part, chosen in zip(('fwd', 'dx', 'dw'), plan):
      ms = {name: _sig(statistics.median(times[part, name]) * 1e3) for name in forms}
      record[f'{part}_ms'] = ms
      record[f'{part}_fastest'] = min(ms, key=ms.get)
      record[f'{part}_plan_over_fastest'] = _sig(ms[chosen] / min(ms.values()), 3)
    records.append(record)
  return records


def bench_photo(gan: steps.GAN, generator: steps.NetState, image_size: int, repeats: int = 3,
                shape: tuple[int, int] = TWELVE_MEGAPIXELS) -> dict[str, Any]:
  """Seconds to colorize one JPEG file of `shape` (H, W; 12 MP) into a PNG, end to end.

  Decode, full-resolution L, the generator at the training size, ab upsampled to
  full size and joined with L, PNG encode and write; the generator's compilation
  is done by a first, untimed photo. Returns a record with the median and minimum
  seconds over `repeats` photos.
  """
  from colorize_jax import inference  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  colorizer = inference.Colorizer(gan, generator, image_size, batch_size=1)
  h, w = shape
  with tempfile.TemporaryDirectory() as tmp:
    # A smooth synthetic photo: JPEG of noise would make decoding unrealistically slow.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([127 + 100 * np.sin(xx / 97), 127 + 100 * np.cos(yy / 131),
                    127 + 100 * np.sin((xx + yy) / 211)], axis=-1).astype(np.uint8)
    source = os.path.join(tmp, 'photo.jpg')
    Image.fromarray(rgb).save(source, quality=90)
    jobs = [inference.Job(source, os.path.join(tmp, f'out{i}.png')) for i in range(repeats + 1)]
    colorizer.colorize_files(jobs[:1], progress=False)  # compiles
    times = []
    for job in jobs[1:]:
      start = time.perf_counter()
      summary = colorizer.colorize_files([job], progress=False)
      times.append(time.perf_counter() - start)
      if summary.failed:
        raise RuntimeError(f'colorizing the benchmark photo failed: {summary.failed}')
  return {'what': 'colorize_photo', 'megapixels': round(h * w / 1e6, 2),
          'seconds_median': round(statistics.median(times), 3), 'seconds_min': round(min(times), 3)}


def bench_pipeline(config, num_batches: int) -> dict[str, Any]:
  """The input pipeline alone: images/s of decode, crop, resize and batch (no model)."""
  from colorize_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  splits = input_pipeline.build_splits(config.data)
  build_s = time.perf_counter() - start

  def epochs():  # as many as it takes: a small folder holds fewer than num_batches
    for epoch in itertools.count():
      yield from input_pipeline.train_batches(
          splits, config.data, image_size=config.image_size,
          global_batch_size=config.batch_size, seed=config.seed, epoch=epoch)

  batches = epochs()
  next(batches)  # tf.data builds its graph and fills the prefetch buffer
  count, start = 0, time.perf_counter()
  for batch in batches:
    count += len(batch['image'])
    if count >= num_batches * config.batch_size:
      break
  seconds = time.perf_counter() - start
  return {'what': 'input_pipeline', 'source': config.data.source,
          'images_per_s': round(count / seconds, 1), 'images': count,
          'build_s': round(build_s, 2)}


def bench_peak(n: int | None = None, repeats: int = 10) -> dict[str, Any]:
  """The device's own ceilings, to read the model's GFLOP/s against.

  Args:
    n: side of the square matmul operands; 8192 on an accelerator (enough to fill
      one), 1024 on a CPU.
    repeats: timed calls per measurement (median), after two warm-up calls.

  Returns:
    A record with TFLOP/s of an [n, n] @ [n, n] matmul of random numbers in float32 at
    JAX's default precision (which lets GPUs use TF32 matrix units), float32 at
    'highest' precision and bfloat16 (float32 accumulation), and the GB/s of an
    elementwise pass over 8 n^2 float32 numbers (bytes read plus written).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if n is None:
    n = 1024 if jax.default_backend() == 'cpu' else 8192
  a, b = jax.random.normal(jax.random.PRNGKey(0), (2, n, n), jnp.float32)

  def rate(fn, *args) -> float:
    """fn(*args) calls per second (median)."""
    fn = jax.jit(fn)
    times = time_calls(lambda: jax.block_until_ready(fn(*args)), repeats, warmup=2)
    return 1.0 / statistics.median(times)

  matmul_tflop = 2 * n ** 3 / 1e12
  record = {'what': 'peak', 'matmul_n': n}
  for name, precision, dtype in (('f32', None, jnp.float32),
                                 ('f32_highest', 'highest', jnp.float32),
                                 ('bf16', None, jnp.bfloat16)):
    x, y = a.astype(dtype), b.astype(dtype)
    matmul = functools.partial(jnp.matmul, precision=precision,
                               preferred_element_type=jnp.float32)
    record[f'{name}_matmul_tflops'] = _sig(matmul_tflop * rate(matmul, x, y))
  big = jnp.tile(a, (8, 1))
  record['copy_gbps'] = _sig(2 * big.nbytes / 1e9 * rate(lambda v: v + 1.0, big))
  return record


class PartsFailed(RuntimeError):
  """Some parts of `run` failed; the other parts ran and their records were written.

  Attributes:
    errors: part -> 'ExceptionType: message', in the order the parts ran.
    records: the records of the parts that succeeded.
  """

  def __init__(self, errors: dict[str, str], records: list[dict[str, Any]]):
    super().__init__('; '.join(f'{part}: {message}' for part, message in errors.items()))
    self.errors, self.records = errors, records


def run(config: ml_collections.ConfigDict, *, num_steps: int = 10, warmup: int = 2,
        parts: tuple[str, ...] = ('train', 'infer', 'photo', 'pipeline', 'peak'),
        out_path: str | None = None) -> list[dict[str, Any]]:
  """Runs the benchmarks in `parts`, printing and (if out_path) appending JSON lines.

  Args:
    config: an experiment config; image_size, batch_size and model.* set the model.
    num_steps: timed train steps (inference gets twice as many).
    warmup: untimed calls before timing.
    parts: any of 'train', 'infer', 'photo', 'pipeline', 'peak', 'layers', run in
      the order given ('layers', one record per conv layer, `bench_layers`, runs only
      when asked for). 'peak' is the device's matmul and copy ceilings (`bench_peak`), to read the
      records' achieved GFLOP/s against; it comes last by default because its big
      buffers would count in the device-memory peak of any part after it.
    out_path: a JSONL file the records are appended to.

  Returns:
    The records.

  Raises:
    ValueError: unknown parts, or a config the model cannot run (nothing ran).
    PartsFailed: after all parts ran, if any failed with a ValueError, OSError or
      RuntimeError (a dataset that is not there, memory exhausted, ...).
  """
  mesh = parallel.make_mesh(config.get('num_devices', None))
  parallel.check_batch_size(config.batch_size, mesh)
  gan = steps.GAN.from_config(config)
  common = {'image_size': config.image_size, 'batch_size': config.batch_size,
            'width': config.model.width, 'compute_dtype': config.model.get('compute_dtype'),
            'conv_impl': config.model.conv_impl, 'devices': mesh.devices.size,
            'device_kind': jax.devices()[0].device_kind, 'jax': jax.__version__,
            'xla_flags': os.environ.get('XLA_FLAGS', ''),
            'xla_cpu_options': layers.xla_cpu_compiler_options(os.environ.get('XLA_FLAGS', ''))
            if jax.default_backend() == 'cpu' else {},
            'time': time.strftime('%FT%T')}
  benches = {'peak': bench_peak,
             'layers': lambda: bench_layers(gan, config.image_size, config.batch_size),
             'train': lambda: bench_train(programs(), num_steps, warmup),
             'infer': lambda: bench_infer(programs(), num_steps, warmup),
             'photo': lambda: bench_photo(gan, programs().new_state().generator,
                                          config.image_size),
             'pipeline': lambda: bench_pipeline(config, max(8, 3 * num_steps))}
  unknown = [part for part in parts if part not in benches]
  if unknown or not parts:
    raise ValueError((f'unknown benchmark parts {unknown}' if unknown else 'no benchmark parts')
                     + f'; choose from {tuple(benches)}')
  # Built on first use: the pipeline alone needs no model.
  programs = functools.cache(lambda: _programs(gan, config.image_size, config.batch_size,
                                               mesh, config.seed))
  records, errors = [], {}
  for part in parts:
    try:
      result = benches[part]()
    except (ValueError, OSError, RuntimeError) as e:
      # A missing dataset or an out-of-memory in one part must not cost the others.
      errors[part] = f'{type(e).__name__}: {e}'
      print(f'error: benchmark part {part!r} failed, going on: {errors[part]}',
            file=sys.stderr, flush=True)
      continue
    for one in result if isinstance(result, list) else [result]:
      record = {**one, **common, 'peak_rss_mb': round(peak_rss_mb(), 1)}
      device_mb = device_peak_mb()
      if device_mb is not None:
        record['device_peak_mb'] = round(device_mb, 1)
      records.append(record)
      print(json.dumps(record), flush=True)
      if out_path:
        with open(out_path, 'a') as f:
          f.write(json.dumps(record) + '\n')
  if errors:
    raise PartsFailed(errors, records)
  return records


def run_peer_format(argv: list[str]) -> dict[str, Any]:
  """Times train and inference with ../shared/bench's flags; prints its one-line format.

  Flags: --size --batch --width --steps --infer-steps --warmup --max-seconds
  --threads --mode --seed --quiet-wait (as bench_torch.py / bench_tf.py); with
  --bench-dir pointing to ../shared/bench, its timing loop (which leaves out
  steps disturbed by other processes) and FLOP counts are used.
  """
  parser = argparse.ArgumentParser(description=run_peer_format.__doc__)
  parser.add_argument('--bench-dir', default=os.environ.get('PEER_BENCH_DIR',
                                                            '../shared/bench'))
  known, rest = parser.parse_known_args(argv)
  sys.path.insert(0, os.path.abspath(known.bench_dir))
  import common as peer  # pylint: disable=g-import-not-at-top
  args = peer.finish_args(peer.make_parser(__doc__, ['jit'], 'jit').parse_args(rest))
  # The configs live beside the package in the repository, not inside it.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from experiments import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.image_size, config.batch_size, config.model.width = args.size, args.batch, args.width
  config.seed = args.seed
  gan = steps.GAN.from_config(config)
  programs = _programs(gan, args.size, args.batch, parallel.make_mesh(1), args.seed)
  state = programs.new_state()
  g_count = sum(x.size for x in jax.tree.leaves(state.generator.params))
  d_count = sum(x.size for x in jax.tree.leaves(state.discriminator.params))
  if (g_count, d_count) != tuple(peer.param_counts(args.size, args.width)):
    raise AssertionError(f'parameter counts {g_count, d_count} differ from the reference '
                         f'{peer.param_counts(args.size, args.width)}')
  box = [state]

  def run_train():
    box[0], metrics = programs.train_step(box[0], programs.batch)
    jax.block_until_ready(metrics)

  train_timing = peer.run_timed('train', run_train, args)
  generator = programs.prepare(box[0].generator)   # the trained weights, as the peers infer

  def run_infer():
    jax.block_until_ready(programs.generate(generator, programs.l_norm))

  infer_timing = peer.run_timed('infer', run_infer, args, infer=True)
  return peer.result('colorize_jax', 'jit', args, train_timing, infer_timing,
                     extra={'version': f'jax {jax.__version__}',
                            'platform': platform.machine()})


if __name__ == '__main__':
  run_peer_format(sys.argv[1:])
