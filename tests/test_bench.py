"""launch.py bench: what each record measures, and that bad requests are clear errors."""

import json
import os
import subprocess
import sys
import types

import jax
import pytest

from colorize_jax import bench
from colorize_jax import cli
from colorize_jax import steps
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_BENCH = os.path.join(ROOT, '..', 'shared', 'bench')


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  return helpers.tiny_config(helpers.make_photo_folder(tmp_path_factory.mktemp('photos')))


@pytest.fixture(scope='module')
def records(config, tmp_path_factory):
  out = tmp_path_factory.mktemp('bench') / 'bench.jsonl'
  code = cli.bench(types.SimpleNamespace(config=config),
                   ['--parts', 'train,infer,peak,pipeline', '--steps', '3', '--warmup', '1',
                    '--out', str(out)])
  assert code == cli.EXIT_OK
  return [json.loads(line) for line in out.read_text().splitlines()]


def test_cli_writes_one_json_record_per_part(records, config):
  """The JSONL file holds one record per requested part, in the order asked for, each
  tagged with the model."""
  assert [r['what'] for r in records] == ['train', 'infer', 'peak', 'input_pipeline']
  for record in records:
    assert record['image_size'] == config.image_size
    assert record['batch_size'] == config.batch_size
    assert record['width'] == config.model.width
    assert record['peak_rss_mb'] > 0


def test_step_records_report_throughput_compile_time_and_flops(records, config):
  """images/s is the batch over the median step; FLOPs come from XLA's cost analysis,
  and a train step (G forward + backward, D on real and fake, both updates) costs
  several times the generator's forward pass."""
  train, infer = records[0], records[1]
  for record in (train, infer):
    assert record['steps_timed'] >= 3
    assert record['compile_s'] > 0
    assert record['images_per_s'] == pytest.approx(
        config.batch_size / record['step_s_median'], rel=1e-2)
    assert record['achieved_gflops'] == pytest.approx(
        record['gflop_per_image'] * record['images_per_s'], rel=1e-2)
  assert infer['gflop_per_image'] > 0
  assert 3 * infer['gflop_per_image'] < train['gflop_per_image'] < 20 * infer['gflop_per_image']


def test_peak_record_gives_the_devices_ceilings(records):
  """Matmul TFLOP/s in each precision and copy GB/s, measured at the CPU's size; on the
  CPU the model's own rate lies below the float32 matmul's."""
  peak, train = records[2], records[0]
  assert peak['matmul_n'] == 1024   # the CPU's size
  for key in ('f32_matmul_tflops', 'f32_highest_matmul_tflops', 'bf16_matmul_tflops',
              'copy_gbps'):
    assert peak[key] > 0
  assert 0 < train['achieved_gflops'] < 1e3 * peak['f32_matmul_tflops']


def test_pipeline_record_counts_the_images_it_delivered(records, config):
  pipeline = records[3]
  assert pipeline['source'] == 'folder'
  assert pipeline['images'] >= 8 * config.batch_size
  assert pipeline['images_per_s'] > 0


def test_photo_bench_colorizes_a_full_resolution_file(config):
  """The photo benchmark runs the real file-to-file path at the photo's own size."""
  gan = steps.GAN.from_config(config)
  generator = gan.init(jax.random.PRNGKey(0), config.image_size).generator
  record = bench.bench_photo(gan, generator, config.image_size, repeats=1, shape=(300, 400))
  assert record['what'] == 'colorize_photo'
  assert record['megapixels'] == 0.12
  assert 0 < record['seconds_min'] <= record['seconds_median']


def test_unknown_or_no_parts_are_usage_errors_before_anything_runs(config, capsys,
                                                                   monkeypatch, tmp_path):
  """Unknown or no parts, an --out that cannot be written, a batch size of 0 and a
  negative warm-up are usage errors, found before any part runs."""
  monkeypatch.setattr(bench, 'bench_train', lambda *a: pytest.fail('ran before checking'))
  flags = types.SimpleNamespace(config=config)
  assert cli.bench(flags, ['--parts', 'train,warp']) == cli.EXIT_USAGE
  assert 'warp' in capsys.readouterr().err
  assert cli.bench(flags, ['--parts', ',']) == cli.EXIT_USAGE
  assert 'no benchmark parts' in capsys.readouterr().err
  # --out is checked before the first part runs, not after it.
  assert cli.bench(flags, ['--parts', 'train', '--out', str(tmp_path)]) == cli.EXIT_USAGE
  assert 'cannot write --out' in capsys.readouterr().err
  zero = config.copy_and_resolve_references()
  zero.batch_size = 0
  assert cli.bench(types.SimpleNamespace(config=zero), ['--parts', 'train']) == cli.EXIT_USAGE
  assert 'batch_size must be >= 1' in capsys.readouterr().err
  with pytest.raises(SystemExit):   # argparse: usage error
    cli.bench(flags, ['--warmup', '-1'])


def test_a_failed_part_is_reported_and_the_other_parts_still_run(config, tmp_path, capsys):
  """A part whose data is missing (the input pipeline of a photo folder that is not
  there) costs only its own record: the parts after it run, their records are written,
  the error names the part and the folder, and the exit status says 'partial'."""
  broken = config.copy_and_resolve_references()
  broken.data.folder = str(tmp_path / 'no_such_folder')
  out = tmp_path / 'bench.jsonl'
  code = cli.bench(types.SimpleNamespace(config=broken),
                   ['--parts', 'pipeline,peak', '--out', str(out)])
  assert code == cli.EXIT_PARTIAL
  assert [json.loads(line)['what'] for line in out.read_text().splitlines()] == ['peak']
  err = capsys.readouterr().err
  assert "'pipeline' failed" in err and 'no_such_folder' in err
  with pytest.raises(bench.PartsFailed) as failure:
    bench.run(broken, parts=('pipeline',))
  assert list(failure.value.errors) == ['pipeline'] and failure.value.records == []


@pytest.mark.skipif(not os.path.exists(os.path.join(PEER_BENCH, 'common.py')),
                    reason='needs ../shared/bench (the peers\' FLOP count)')
def test_gpu_script_keeps_to_its_budget_survives_failed_steps_and_prints_its_table(
    tmp_path):
  """experiments/gpu_bench.sh, shrunk (SMOKE=1) on the CPU with no time for a model run:
  the peak is measured, the model runs that do not fit are skipped and say so, the
  PyTorch steps fail here (no CUDA) without stopping the script, and the table
  reads the peak back."""
  # 70 s: enough for the peak (needs 30) and the PyTorch steps (40) after it, never
  # for a model run (90).
  env = {**os.environ, 'SMOKE': '1', 'BUDGET_S': '70', 'PYTHON': sys.executable}
  done = subprocess.run(['bash', 'experiments/gpu_bench.sh', str(tmp_path), PEER_BENCH],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  records = [json.loads(line) for line in (tmp_path / 'gpu.jsonl').read_text().splitlines()]
  assert [r['what'] for r in records] == ['peak']
  assert '== skip ours float32 fast b4 train,infer' in done.stdout
  assert '== torch eager b4: rc=1' in done.stdout
  assert "peak: {'f32_matmul_tflops'" in done.stdout


def test_layers_part_times_every_formulation_of_every_conv_layer(config):
  """`--parts layers` gives one record per conv layer the train step runs (the U-Net's
  2 log2(S) layers, then the PatchGAN's), found by tracing the nets, each with the
  forward, input-gradient and kernel-gradient time of every formulation of its op, the
  plan 'fast' runs and how much slower than the fastest that plan is (>= 1)."""
  from colorize_jax import layers  # pylint: disable=g-import-not-at-top
  records = bench.run(config, parts=('layers',))
  depth = (config.image_size - 1).bit_length()
  assert [r['net'] for r in records] == ['generator'] * 2 * depth + ['discriminator'] * 4
  assert [r['op'] for r in records] == (['s2'] * depth + ['t'] * depth + ['s2', 's2', 's1', 's1'])
  assert records[depth]['x_shape'][1:3] == [1, 1]       # the bottleneck feeds the decoder
  assert records[2 * depth - 1]['kernel_shape'][3] == 2  # the ab output layer
  for r in records:
    names = set(layers.formulations(r['op'])) - ({'plain'} if r['op'] == 't' else set())
    assert r['plan'] == list(layers.plan_for(r['op'], r['x_shape'], r['kernel_shape']))
    for part, chosen in zip(('fwd', 'dx', 'dw'), r['plan']):
      assert set(r[f'{part}_ms']) == names and min(r[f'{part}_ms'].values()) > 0
      assert r[f'{part}_fastest'] == min(r[f'{part}_ms'], key=r[f'{part}_ms'].get)
      assert r[f'{part}_plan_over_fastest'] == pytest.approx(
          r[f'{part}_ms'][chosen] / min(r[f'{part}_ms'].values()), rel=1e-2)


def test_flops_per_image_do_not_depend_on_the_device_count(records, tmp_path):
  """XLA's cost analysis counts one device's share: on 2 devices the FLOPs per image of
  inference are those of 1 device, and the train step's at least those (every device also
  updates all the replicated weights) (both once came out halved)."""
  code = '\n'.join([
      'import json, pathlib, sys, types',
      'from colorize_jax import cli',
      'from tests import helpers',
      'photos = helpers.make_photo_folder(pathlib.Path(sys.argv[1]) / "photos")',
      'config = helpers.tiny_config(photos)',
      'assert cli.bench(types.SimpleNamespace(config=config), ["--parts", "train,infer", '
      '"--steps", "3", "--warmup", "0", "--out", sys.argv[1] + "/two.jsonl"]) == 0',
  ])
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        ' --xla_force_host_platform_device_count=2').strip())
  subprocess.run([sys.executable, '-c', code, str(tmp_path)], check=True, env=env,
                 timeout=900)
  two = [json.loads(line) for line in (tmp_path / 'two.jsonl').read_text().splitlines()]
  assert [r['devices'] for r in two] == [2, 2]
  (train_1, infer_1), (train_2, infer_2) = records[:2], two
  assert infer_2['gflop_per_image'] == pytest.approx(infer_1['gflop_per_image'], rel=0.02)
  assert train_1['gflop_per_image'] <= train_2['gflop_per_image'] < (
      1.5 * train_1['gflop_per_image'])


def test_a_missing_or_unreadable_config_is_a_usage_error(tmp_path):
  """No --config, or a --config file that does not exist, exits with the usage status and
  one error line, not a traceback (the second once escaped as an OSError)."""
  for args in ([], ['--config', str(tmp_path / 'nonexistent.py')]):
    done = subprocess.run([sys.executable, 'launch.py', 'bench', *args, '--parts', 'train'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == cli.EXIT_USAGE, done.stderr
    assert 'error:' in done.stderr and 'Traceback' not in done.stderr, done.stderr


def test_compile_records_say_where_the_program_came_from(tmp_path):
  """A compile time means little without knowing whether XLA compiled (minutes at 256px)
  or the persistent cache answered (seconds): records say 'miss', then 'hit' in a new
  process, 'memory' within one, 'off' with no cache folder."""
  code = '\n'.join([
      'import jax, jax.numpy as jnp',
      'from colorize_jax import bench',
      'f = jax.jit(lambda x: jnp.sin(x) @ x.T * 3.0 + 1.25)',
      'print(bench._compiled(f, jnp.ones((32, 32)))[2], bench._compiled(f, jnp.ones((32, 32)))[2])',
  ])
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', PYTHONPATH=ROOT)
  seen = [subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.split() for _ in range(2)]
  assert seen == [['miss', 'memory'], ['hit', 'memory']]
  del env['JAX_COMPILATION_CACHE_DIR']
  off = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True, timeout=300).stdout.split()
  assert off == ['off', 'off']


def test_step_records_name_their_compile_cache(records):
  assert {r['compile_cache'] for r in records[:2]} <= {'hit', 'miss', 'memory'}
