"""Tests of checkpoint evaluation, its reports and cache, and the selection protocol."""

import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
from PIL import Image
import pytest

from colorize_jax import checkpoints
from colorize_jax import cli
from colorize_jax import color
from colorize_jax import evaluate
from colorize_jax import inception
from colorize_jax import inference
from colorize_jax import input_pipeline
from colorize_jax import metrics
from colorize_jax import steps
from colorize_jax import train
from experiments import default

IMAGE_SIZE = 32
NUM_VAL = 3   # with batch 2: a padded last batch


def photo(height, width, seed):
  """A smooth colour photo stand-in: random colour blocks, bilinearly enlarged; uint8 [H, W, 3]."""
  blocks = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(blocks).resize((width, height), Image.Resampling.BILINEAR))


def tiny_config(folder, seed=0):
  config = default.get_config()
  config.seed = seed
  config.image_size = IMAGE_SIZE
  config.batch_size = 2
  config.num_epochs = 2
  config.model.width = 4
  config.data.source = 'folder'
  config.data.folder = str(folder)
  config.num_sample_images = 2
  config.log_every_steps = 1
  return config


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  root = tmp_path_factory.mktemp('photos')
  for split, count, offset in (('train', 6, 0), ('val', NUM_VAL, 100)):
    (root / split).mkdir()
    for i in range(count):
      Image.fromarray(photo(40, 48, offset + i)).save(root / split / f'p{i}.png')
  return root


def save_run(workdir, config, state, scales):
  """Saves `state` as checkpoints {step: the generator's output layer scaled by `scale`}.

  An untrained generator's colours are ~0.2 ab units; scaling its last layer
  gives colorizations whose metrics clearly differ from step to step.
  """
  checkpoints.save_config(workdir, config)
  ckpts = checkpoints.Checkpoints(workdir)
  for step, scale in scales.items():
    params = dict(state.generator.params)
    params['to_ab'] = {'kernel': params['to_ab']['kernel'] * scale,
                       'bias': params['to_ab']['bias'] + np.array([0.1, -0.1], np.float32)}
    ckpts.save(step, state.replace(step=np.int32(step),
                                   generator=state.generator.replace(params=params)),
               {'epoch': step // 3, 'epoch_end': True, 'steps_per_epoch': 3})
  ckpts.close()


@pytest.fixture(scope='module')
def runs(photos, tmp_path_factory):
  """Two runs with checkpoints at steps 3 and 6: moderate, then vivid colours (run 1: another init).
  Two runs with checkpoints at steps 3 and 6: moderate, then vivid colours (run 1: another init)."""
  root = tmp_path_factory.mktemp('runs')
  config = tiny_config(photos)
  gan = steps.GAN.from_config(config)
  workdirs = []
  for seed, scales in ((0, {3: 30.0, 6: 300.0}), (1, {3: 60.0, 6: 200.0})):
    state = gan.init(jax.random.PRNGKey(seed), IMAGE_SIZE)
    workdirs.append(str(root / f'run{seed}'))
    save_run(workdirs[-1], config, state, scales)
  return workdirs


@pytest.fixture(scope='module')
def val_images(runs):
  """The validation images as evaluation sees them: uint8 [NUM_VAL, S, S, 3]."""
  config = checkpoints.load_config(runs[0])
  splits = input_pipeline.build_splits(config.data)
  batches = list(input_pipeline.val_batches(splits, image_size=IMAGE_SIZE, global_batch_size=2))
  return np.concatenate([b['image'][b['mask']] for b in batches])


@pytest.fixture(scope='module')
def result(runs):
  """Step 3 of the first run evaluated without Inception."""
  return evaluate.evaluate(runs[0], 3, inception_weights=None, progress=False)


def test_model_metrics_equal_the_training_validation(runs, result, val_images):
  """On the run's validation split, evaluate's numbers are those train.validation_step logs for the
  checkpoint."""
  restored = inference.restore(runs[0], 3)
  step = jax.jit(functools.partial(train.validation_step, gan=restored.gan))
  val = {k: float(np.mean(v)) for k, v in step(restored.state, {'image': val_images}).items()}
  rows = result['rows']
  assert result['num_images'] == NUM_VAL and result['step'] == 3 and result['epoch'] == 1
  pairs = [(rows['model']['psnr'], val['psnr']), (rows['model']['auc'], val['auc']),
           (rows['model']['cf'], val['cf']), (rows['model']['ab_l1'], val['ab_mae']),
           (rows['model']['realism'], val['d_fake_prob']),
           (rows['real']['realism'], val['d_real_prob']),
           (rows['gray']['psnr'], val['gray_psnr']), (rows['gray']['ab_l1'], val['gray_ab_mae']),
           (rows['gray']['auc'], val['gray_auc'])]
  for got, want in pairs:
    np.testing.assert_allclose(got, want, rtol=1e-5)
  assert abs(rows['model']['psnr'] - rows['gray']['psnr']) > 0.1   # the model is not gray


def test_gray_baseline_and_real_rows_are_metrics_of_ab_zero_and_real_photos(result, val_images):
  """The gray row is exactly the metrics of the ab = 0 images, the real row the real photos' CF."""
  l_norm, real_ab_norm = color.rgb_to_model_inputs(val_images)
  zero = np.zeros(real_ab_norm.shape, np.float32)
  gray_rgb = color.model_outputs_to_rgb(l_norm, zero)
  real_rgb = color.to_float_rgb(val_images)
  per_image = metrics.image_metrics(gray_rgb, real_rgb, zero, color.denormalize_ab(real_ab_norm))
  want = {k: float(np.mean(v)) for k, v in per_image.items()}
  gray = result['rows']['gray']
  for name in ('psnr', 'ssim', 'ab_l1', 'ab_l2', 'auc', 'cf', 'cf_abs'):
    np.testing.assert_allclose(gray[name], want[name], rtol=1e-6, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(gray['delta_cf'], abs(want['cf'] - want['cf_real']), rtol=1e-5)
  np.testing.assert_allclose(result['rows']['real']['cf'], want['cf_real'], rtol=1e-6)
  np.testing.assert_allclose(result['rows']['real']['cf'],
                             float(np.mean(metrics.colorfulness(val_images))), rtol=1e-5)
  assert gray['cf'] < 0.5 < result['rows']['real']['cf']


def test_report_files_and_missing_inception_reason(result):
  """evaluate writes metrics.json, report.html (3 systems, why IS/FID are missing) and the example
  grid."""
  folder = result['dir']
  assert folder.endswith(os.path.join('eval', 'val', 'step_3-no-inception'))
  stored = json.loads(open(os.path.join(folder, 'metrics.json')).read())
  assert stored['rows'] == json.loads(json.dumps(result['rows']))
  assert result['rows']['model'].get('inception_score') is None
  assert set(result['unavailable']) == {'inception_score', 'fid'}
  page = open(os.path.join(folder, 'report.html')).read()
  for text in ('gray baseline', 'real photos', 'IS missing', '--inception-weights none',
               'examples.png'):
    assert text in page
  with Image.open(os.path.join(folder, 'examples.png')) as grid:
    assert grid.size == (3 * (IMAGE_SIZE + 2) + 2, NUM_VAL * (IMAGE_SIZE + 2) + 2)


def test_inception_metrics_with_random_weights(runs):
  """With (test-only) random InceptionV3 weights, IS is reported for all three systems and FID for
  model and gray."""
  out = evaluate.evaluate(runs[0], 6, inception_weights='random', progress=False,
                          use_cache=False)
  rows = out['rows']
  for row in ('model', 'gray', 'real'):
    assert 1.0 - 1e-6 <= rows[row]['inception_score'] <= inception.NUM_CLASSES, row
  for row in ('model', 'gray'):
    assert np.isfinite(rows[row]['fid']) and rows[row]['fid'] > -1e-6, row
  assert 'fid' not in rows['real'] and not out['unavailable']
  assert out['inception_weights'].startswith('random')


def test_unloadable_inception_weights_leave_the_other_metrics(runs, tmp_path,
                                                               count_evaluations, monkeypatch):
  """A weights file that cannot be loaded (or a damaged cached ImageNet file) leaves IS /
  FID missing with the reason; the rest is computed, and cached: a rerun finds it (it was
  recomputed every time). (A file that is not there at all is an error: see below.)"""
  broken = tmp_path / 'inception.h5'
  broken.write_bytes(b'not InceptionV3 weights')
  run = tmp_path / 'run'
  shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns(evaluate.EVAL_DIR))
  for _ in range(2):
    out = evaluate.evaluate(str(run), 3, inception_weights=str(broken), progress=False)
    assert str(broken) in out['unavailable']['inception_score']
    assert out['rows']['model']['psnr'] is not None and 'fid' not in out['rows']['model']
  assert len(count_evaluations) == 1
  keras_home = tmp_path / 'keras'
  (keras_home / 'models').mkdir(parents=True)
  (keras_home / 'models' / inception.IMAGENET_WEIGHTS_FILE).write_bytes(b'half a download')
  monkeypatch.setenv('KERAS_HOME', str(keras_home))
  for _ in range(2):
    out = evaluate.evaluate(str(run), 3, progress=False)
    assert 'damaged' in out['unavailable']['inception_score']
  assert len(count_evaluations) == 2


def test_results_of_other_inception_weights_never_overwrite_each_other(runs, tmp_path):
  """An evaluation without Inception (or with other weights) writes its own folder: the
  report with IS that a leaderboard links to stays as it was."""
  run = tmp_path / 'run'
  shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns(evaluate.EVAL_DIR))
  with_is = evaluate.evaluate(str(run), 6, inception_weights='random', progress=False)
  before = open(os.path.join(with_is['dir'], 'metrics.json')).read()
  without = evaluate.evaluate(str(run), 6, inception_weights=None, progress=False)
  assert without['dir'] != with_is['dir']
  assert open(os.path.join(with_is['dir'], 'metrics.json')).read() == before


def test_low_rank_fid_equals_the_reference_formula():
  """The fast FID for fewer images than feature dimensions equals inception.frechet_distance."""
  rng = np.random.default_rng(0)
  f1 = rng.normal(size=(10, 64))
  f2 = rng.normal(0.3, 1.5, size=(13, 64))
  s1 = inception.FeatureStats.empty(64).update(f1)
  s2 = inception.FeatureStats.empty(64).update(f2)
  want = inception.frechet_distance(s1.mean(), s1.cov(), s2.mean(), s2.cov(), method='eigh')
  np.testing.assert_allclose(evaluate.frechet_distance_low_rank(f1, f2), want, rtol=1e-7)


def test_rank_knows_which_direction_is_better():
  """Higher-is-better metrics rank descending, lower-is-better ascending, missing values last."""
  entries = [{'step': s, 'rows': {'model': {'psnr': p, 'fid': f}}}
             for s, p, f in ((1, 20.0, 30.0), (2, 25.0, None), (3, 22.0, 10.0))]
  assert [e['step'] for e in evaluate.rank(entries, 'psnr')] == [2, 3, 1]
  assert [e['step'] for e in evaluate.rank(entries, 'fid')] == [3, 1, 2]
  assert [e['rank'] for e in evaluate.rank(entries, 'fid')] == [1, 2, 3]
  assert not evaluate.METRICS['ab_l1'].higher_is_better
  assert evaluate.METRICS['inception_score'].higher_is_better
  # Ties share a rank (they got 3 and 4, so a top 3 starred one of two equal checkpoints).
  tied = [{'step': s, 'rows': {'model': {'psnr': p}}}
          for s, p in ((1, 20.0), (2, 25.0), (3, 25.0), (4, 19.0), (5, None))]
  assert [(e['step'], e['rank']) for e in evaluate.rank(tied, 'psnr')] == [
      (2, 1), (3, 1), (1, 3), (4, 4), (5, 5)]


def test_leaderboard_names_runs_apart_and_says_what_differs(tmp_path):
  """Two runs with one folder name are told apart by their paths; the data line names the
  Inception weights, and data or gray baselines that differ between entries are said to
  differ instead of the first entry's standing for all."""
  def entry(workdir, psnr, data, gray, weights):
    return {'workdir': str(tmp_path / workdir), 'step': 3, 'epoch': 1, 'data': data,
            'inception_weights': weights, 'rows': {'model': {'psnr': psnr},
                                                   'gray': {'psnr': gray}}}

  ranking = evaluate.rank([entry('a/run1', 21.0, 'val of a', 20.0, 'random'),
                           entry('b/run1', 22.0, 'val of b', 19.0, 'random')], 'psnr')
  table = evaluate.leaderboard_table(ranking, 'psnr')
  assert [row[1] for row in table[1:]] == [os.path.join('b', 'run1'), os.path.join('a', 'run1')]
  (tmp_path / 'board').mkdir()
  evaluate.write_leaderboard(ranking, 'psnr', 1, str(tmp_path / 'board'))
  text = (tmp_path / 'board' / 'leaderboard.md').read_text()
  assert 'DIFFER between checkpoints: val of a; val of b' in text
  assert 'Inception weights (IS, FID): random' in text
  assert 'it differs between these checkpoints' in text


@pytest.fixture
def count_evaluations(monkeypatch):
  """Counts the checkpoints actually evaluated (not read from the cache)."""
  calls = []
  compute = evaluate.Evaluator._compute

  def counted(self, restored, *args, **kwargs):
    calls.append((str(restored.workdir), restored.step))
    return compute(self, restored, *args, **kwargs)

  monkeypatch.setattr(evaluate.Evaluator, '_compute', counted)
  return calls


def test_select_ranks_caches_and_records_each_runs_best(runs, tmp_path, count_evaluations):
  """select evaluates every checkpoint once (a rerun evaluates nothing), ranks them, writes the
  leaderboard and best.json."""
  out = str(tmp_path / 'board')
  first = evaluate.select(runs, 'psnr', top=2, out_dir=out,
                          evaluator=evaluate.Evaluator(None, progress=False))
  # Step 3 of run0 was cached by another test in this module if it ran first.
  assert len(count_evaluations) + len(first.cached) == 4
  values = [e['value'] for e in first.ranking]
  assert values == sorted(values, reverse=True)
  for name in ('leaderboard.md', 'leaderboard.csv', 'leaderboard.html', 'selection.json'):
    assert os.path.isfile(os.path.join(out, name))
  assert open(os.path.join(out, 'leaderboard.html')).read().count('data:image/png;base64') == 2

  count_evaluations.clear()
  again = evaluate.select(runs, 'ab_l1', top=2, out_dir=out,
                          evaluator=evaluate.Evaluator(None, progress=False))
  assert count_evaluations == [] and len(again.cached) == 4
  values = [e['value'] for e in again.ranking]
  assert values == sorted(values)   # lower is better
  for workdir in runs:
    best = inference.read_best(workdir)
    mine = [e for e in again.ranking if e['workdir'] == workdir]
    assert best['step'] == mine[0]['step'] and best['metric'] == 'ab_l1'
    assert best['rank'] == mine[0]['rank'] and best['winner'] == (mine[0]['rank'] == 1)


def test_cache_key_follows_the_data(runs, tmp_path, count_evaluations):
  """Evaluating on another folder computes anew (and skips unusable files); the same folder again is
  cached."""
  folder = tmp_path / 'photos'
  folder.mkdir()
  for i in range(3):
    Image.fromarray(photo(36, 36, 200 + i)).save(folder / f'c{i}.png')
  Image.fromarray(photo(36, 36, 300)[..., 0]).save(folder / 'gray.png')
  (folder / 'broken.jpg').write_bytes(b'nope')
  out = evaluate.evaluate(runs[1], 3, data_dir=str(folder), inception_weights=None,
                          progress=False)
  assert out['num_images'] == 3 and out['skipped'] == {'grayscale': 1, 'unreadable': 1}
  assert os.path.basename(os.path.dirname(out['dir'])).startswith('photos-')
  again = evaluate.evaluate(runs[1], 3, data_dir=str(folder), inception_weights=None,
                            progress=False)
  assert len(count_evaluations) == 1 and again['rows'] == out['rows']
  Image.fromarray(photo(36, 36, 400)).save(folder / 'c9.png')   # the data changed
  evaluate.evaluate(runs[1], 3, data_dir=str(folder), inception_weights=None, progress=False)
  assert len(count_evaluations) == 2


def test_unavailable_selection_metric_fails_clearly(runs, tmp_path, capsys, count_evaluations):
  """Ranking by IS without Inception weights fails before evaluating, suggesting psnr; a fallback is
  used only if asked."""
  flags = types.SimpleNamespace(workdir=None)
  weights = str(tmp_path / 'broken.h5')
  (tmp_path / 'broken.h5').write_bytes(b'not InceptionV3 weights')
  code = cli.select(flags, ['--workdirs', *runs, '--inception-weights', weights,
                            '--out', str(tmp_path / 'board')])
  err = capsys.readouterr().err
  assert code == 2 and '--metric psnr' in err and weights in err
  assert count_evaluations == [] and not os.path.exists(tmp_path / 'board')
  with pytest.raises(evaluate.MetricUnavailable):
    evaluate.select(runs, 'fid', evaluator=evaluate.Evaluator(weights, progress=False))
  chosen = evaluate.select(runs, 'inception_score', fallback_metric='psnr',
                           out_dir=str(tmp_path / 'board'),
                           evaluator=evaluate.Evaluator(weights, progress=False))
  assert chosen.metric == 'psnr'


def test_wrong_paths_fail_before_inception_and_before_evaluating(runs, tmp_path, capsys,
                                                                monkeypatch, count_evaluations):
  """A weights file asked for by name that is not there, a run that is not there, a file
  given as --data and an eval/ folder that cannot be written are usage errors (exit 2)
  found before Inception is loaded (or downloaded) and before any checkpoint is
  evaluated."""
  flags = types.SimpleNamespace(workdir=runs[0])
  missing = str(tmp_path / 'no_weights.h5')
  assert cli.evaluate(flags, ['--step', '3', '--inception-weights', missing]) == 2
  assert missing in capsys.readouterr().err
  assert cli.select(types.SimpleNamespace(workdir=None), [
      '--workdirs', *runs, '--inception-weights', missing, '--metric', 'psnr',
      '--out', str(tmp_path / 'board')]) == 2
  assert missing in capsys.readouterr().err
  monkeypatch.setattr(inception.InceptionScorer, 'create',
                      lambda *a, **k: pytest.fail('Inception set up before the run was checked'))
  nowhere = str(tmp_path / 'no_run')
  assert cli.evaluate(types.SimpleNamespace(workdir=nowhere), []) == 2
  assert cli.select(types.SimpleNamespace(workdir=None), ['--workdirs', runs[0], nowhere]) == 2
  monkeypatch.undo()
  (tmp_path / 'one.png').write_bytes(b'')
  with pytest.raises(ValueError, match='is a file'):
    evaluate.folder_data(str(tmp_path / 'one.png'))
  run = tmp_path / 'run'
  shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns(evaluate.EVAL_DIR))
  (run / evaluate.EVAL_DIR).write_text('a file where the results would go')
  with pytest.raises(ValueError, match='Cannot write the evaluation results'):
    evaluate.evaluate(str(run), 3, inception_weights=None, progress=False)
  assert count_evaluations == []


def test_the_cache_never_serves_results_of_weights_since_replaced(runs, tmp_path,
                                                                   count_evaluations):
  """A run retrained from an earlier step (its later checkpoints deleted and saved anew,
  as the NaN error advises) is evaluated again, not served the old weights' numbers; a
  copy of a run is served its cache (same weights) and recorded as itself: its best.json
  and the leaderboard name the copy, and the original is left alone."""
  run = tmp_path / 'run'
  shutil.copytree(runs[0], run)
  evaluate.evaluate(str(run), 3, inception_weights=None, progress=False)
  first = evaluate.evaluate(str(run), 6, inception_weights=None, progress=False)
  computed = len(count_evaluations)
  config = checkpoints.load_config(str(run))
  gan = steps.GAN.from_config(config)
  shutil.rmtree(run / 'checkpoints' / '6')
  save_run(str(run), config, gan.init(jax.random.PRNGKey(7), IMAGE_SIZE), {6: 3.0})
  again = evaluate.evaluate(str(run), 6, inception_weights=None, progress=False)
  assert len(count_evaluations) == computed + 1
  assert again['rows']['model'] != first['rows']['model']

  copy = tmp_path / 'copy'
  shutil.copytree(run, copy)
  original_best = (run / inference.BEST_FILE).exists()
  ranked = evaluate.select([str(copy)], 'psnr', out_dir=str(tmp_path / 'board'),
                           evaluator=evaluate.Evaluator(None, progress=False))
  assert len(count_evaluations) == computed + 1   # the copy's weights are the run's: cached
  assert {e['workdir'] for e in ranked.ranking} == {str(copy)}
  assert inference.read_best(str(copy))['step'] in (3, 6)
  assert (run / inference.BEST_FILE).exists() == original_best

  # The step best.json selects, saved again since (retrained): 'best' is refused, not
  # served other weights than the ones ranked (colorize --best used them without a word).
  chosen = inference.read_best(str(copy))['step']
  assert inference.resolve_step(str(copy), 'best') == chosen
  shutil.rmtree(copy / 'checkpoints' / str(chosen))
  save_run(str(copy), config, gan.init(jax.random.PRNGKey(8), IMAGE_SIZE), {chosen: 1.0})
  with pytest.raises(FileNotFoundError, match='saved again since'):
    inference.resolve_step(str(copy), 'best')


def test_a_checkpoint_deleted_or_saved_again_while_evaluated(runs, tmp_path, monkeypatch):
  """A training's retention may delete the checkpoint being evaluated, or a retrained run
  save it again: the evaluation of the weights it read is written (it was thrown away
  with orbax's 'No step path found', its key read after the evaluation) under the key of
  the save it read, so the new save's weights are evaluated when asked for."""
  run = tmp_path / 'run'
  shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns(evaluate.EVAL_DIR))  # no cache
  config = checkpoints.load_config(str(run))
  gan = steps.GAN.from_config(config)
  compute = evaluate.Evaluator._compute

  def deleted_meanwhile(self, restored, *args, **kwargs):
    shutil.rmtree(run / 'checkpoints' / '6')
    return compute(self, restored, *args, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(evaluate.Evaluator, '_compute', deleted_meanwhile)
    first = evaluate.evaluate(str(run), 6, inception_weights=None, progress=False)
  assert os.path.exists(os.path.join(first['dir'], evaluate.METRICS_FILE))
  save_run(str(run), config, gan.init(jax.random.PRNGKey(7), IMAGE_SIZE), {6: 3.0})
  again = evaluate.evaluate(str(run), 6, inception_weights=None, progress=False)
  assert again['key'] != first['key'] and again['rows']['model'] != first['rows']['model']


# orbax's reader leaves a TensorStore callback for its closed event loop when a read fails.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_checkpoint_missing_a_file_is_damaged_not_missing(runs, tmp_path, capsys):
  """A step folder that lost a file (a delete or a copy cut short) is a damaged
  checkpoint: select lists it and ranks the rest (it once aborted the whole ranking)."""
  run = tmp_path / 'run'
  shutil.copytree(runs[1], run, ignore=shutil.ignore_patterns(evaluate.EVAL_DIR))
  (run / 'checkpoints' / '3' / 'meta' / 'metadata').unlink()
  code = cli.select(types.SimpleNamespace(workdir=None), [
      '--workdirs', str(run), '--metric', 'psnr', '--inception-weights', 'none',
      '--out', str(tmp_path / 'board')])
  assert code == 1
  assert 'left out: step 3' in capsys.readouterr().err
  assert json.loads((run / inference.BEST_FILE).read_text())['step'] == 6


# orbax's reader leaves a TensorStore callback for its closed event loop when a read fails.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_select_leaves_out_a_damaged_checkpoint_and_ranks_the_rest(runs, tmp_path, capsys):
  """One checkpoint whose files are damaged is listed and left out; the others are ranked
  and the best recorded (exit 1); a run with nothing readable is an error."""
  run = tmp_path / 'run'
  shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns(evaluate.EVAL_DIR))
  for path in (run / 'checkpoints' / '6' / 'state').rglob('*'):
    if path.is_file() and path.parent.name == 'd':
      path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  code = cli.select(types.SimpleNamespace(workdir=None), [
      '--workdirs', str(run), '--metric', 'psnr', '--inception-weights', 'none',
      '--out', str(tmp_path / 'board')])
  captured = capsys.readouterr()
  assert code == 1
  assert 'left out: step 6' in captured.err and 'damaged' in captured.err
  assert json.loads((run / inference.BEST_FILE).read_text())['step'] == 3
  for path in (run / 'checkpoints' / '3' / 'state').rglob('*'):
    if path.is_file() and path.parent.name == 'd':
      path.write_bytes(b'')
  with pytest.raises(checkpoints.CorruptCheckpoint, match='None of the 2 checkpoints'):
    evaluate.select([str(run)], 'psnr', out_dir=str(tmp_path / 'board2'),
                    evaluator=evaluate.Evaluator(None, progress=False), use_cache=False)


def test_select_ranks_epochs_not_a_checkpoint_saved_on_an_interruption(runs, tmp_path):
  """A run interrupted mid-epoch holds a checkpoint that only serves to resume: select
  ranks the epochs' checkpoints without it, the default ('latest') of colorize and
  evaluate is the latest epoch's (it was the interruption's), --step still reaches it, and
  a run with nothing else says so."""
  run = tmp_path / 'run'
  shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns(evaluate.EVAL_DIR))
  gan = steps.GAN.from_config(checkpoints.load_config(run))
  ckpts = checkpoints.Checkpoints(run)
  state, _ = ckpts.restore(steps.abstract_state(gan, IMAGE_SIZE))
  ckpts.save(7, state, {'epoch': 2, 'epoch_end': False, 'steps_per_epoch': 3})
  ckpts.close()
  assert inference.available_steps(run) == [3, 6, 7]
  chosen = evaluate.select([str(run)], 'psnr', out_dir=str(tmp_path / 'board'),
                           evaluator=evaluate.Evaluator(None, progress=False))
  assert sorted(entry['step'] for entry in chosen.ranking) == [3, 6]
  assert inference.resolve_step(run) == inference.resolve_step(run, 'latest') == 6
  assert inference.resolve_step(run, 7) == 7
  only = tmp_path / 'only_interrupted'
  shutil.copytree(run, only)
  for step in ('3', '6'):
    shutil.rmtree(only / 'checkpoints' / step)
  assert inference.resolve_step(only) == 7   # all there is
  with pytest.raises(FileNotFoundError, match='only a checkpoint saved on an interruption'):
    evaluate.select([str(only)], 'psnr', out_dir=str(tmp_path / 'board2'),
                    evaluator=evaluate.Evaluator(None, progress=False))


def test_colorize_best_uses_the_selection(runs, tmp_path, capsys):
  """After select, `colorize --best` colours with the checkpoint best.json names, even when it is
  not the latest."""
  run = runs[0]
  board = str(tmp_path / 'board')
  ev = evaluate.Evaluator(None, progress=False)
  results = {s: ev.evaluate(run, s)['rows']['model'] for s in (3, 6)}
  # A metric by which the earlier checkpoint wins, so 'best' differs from 'latest'.
  metric = next((m for m, spec in evaluate.METRICS.items() if 'model' in spec.rows and
                 results[3].get(m) is not None and results[3][m] != results[6][m] and
                 (results[3][m] > results[6][m]) == spec.higher_is_better), None)
  if metric is None:
    pytest.skip('the later checkpoint wins on every metric')
  evaluate.select([run], metric, out_dir=board, evaluator=ev)
  assert inference.read_best(run)['step'] == 3
  assert inference.Colorizer.from_workdir(run, 'best').step == 3

  image = photo(30, 50, 500)
  Image.fromarray(image).save(tmp_path / 'in.png')
  flags = types.SimpleNamespace(workdir=run)
  assert cli.colorize(flags, [str(tmp_path / 'in.png'), '--best', '--out', str(tmp_path / 'b'),
                              '--no-progress']) == 0
  with Image.open(tmp_path / 'b' / 'in.png') as img:
    got = np.asarray(img)
  want = inference.Colorizer.from_workdir(run, 3).colorize(image)
  latest = inference.Colorizer.from_workdir(run, 6).colorize(image)
  np.testing.assert_array_equal(got, want)
  assert np.abs(got.astype(int) - latest.astype(int)).max() > 0


def test_cli_evaluate_prints_the_table(runs, capsys):
  """`evaluate` prints the model / gray / real table, why IS and FID are missing (once: they
  miss for one reason) and the report's path (exit 0); a bad step exits 2."""
  flags = types.SimpleNamespace(workdir=runs[1])
  assert cli.evaluate(flags, ['--step', '6', '--inception-weights', 'none']) == 0
  text = capsys.readouterr().out
  assert 'gray baseline' in text and 'real photos' in text and 'report.html' in text
  missing = [line for line in text.splitlines() if ' missing: ' in line]
  assert len(missing) == 1 and {'inception_score', 'fid'} <= set(missing[0].split())
  assert cli.evaluate(flags, ['--step', '4', '--inception-weights', 'none']) == 2


def test_a_dangling_link_among_the_photos_is_skipped_like_an_unreadable_file(runs, tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  for i in range(2):
    Image.fromarray(photo(36, 36, 500 + i)).save(folder / f'c{i}.png')
  os.symlink(tmp_path / 'nowhere.jpg', folder / 'gone.jpg')
  out = evaluate.evaluate(runs[1], 3, data_dir=str(folder), inception_weights=None,
                          progress=False)
  assert out['num_images'] == 2 and out['skipped'] == {'unreadable': 1}


def test_select_ranks_a_run_named_twice_once(runs, tmp_path):
  """runs/r1, runs/r1/ and a link to it are one run: its checkpoints are ranked once."""
  os.symlink(runs[0], tmp_path / 'link')
  ranked = evaluate.select([runs[0], runs[0] + os.sep, str(tmp_path / 'link')], 'psnr',
                           out_dir=str(tmp_path / 'board'),
                           evaluator=evaluate.Evaluator(None, progress=False))
  assert sorted(e['step'] for e in ranked.ranking) == [3, 6]
  # One path given as it is, not in a list, is that run (not the letters of its name).
  for one in (runs[0], pathlib.Path(runs[0])):
    ranked = evaluate.select(one, 'psnr', out_dir=str(tmp_path / 'board'),
                             evaluator=evaluate.Evaluator(None, progress=False))
    assert sorted(e['step'] for e in ranked.ranking) == [3, 6]


def test_data_folders_with_names_that_are_not_utf8_are_evaluated(runs, tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  try:
    for i in range(2):
      Image.fromarray(photo(36, 36, 600 + i)).save(os.fsencode(folder) + b'/caf\xe9%d.png' % i)
  except (OSError, ValueError):
    pytest.skip('this file system takes UTF-8 names only')
  out = evaluate.evaluate(runs[1], 3, data_dir=str(folder), inception_weights=None,
                          progress=False)
  assert out['num_images'] == 2


def test_global_flags_may_come_before_the_mode(runs):
  """`launch.py --workdir RUN evaluate --step N` parses like `launch.py evaluate --workdir
  RUN --step N` (the mode's own options were refused as unknown flags)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([sys.executable, 'launch.py', '--workdir', runs[0], 'evaluate',
                         '--step', '3', '--inception-weights', 'none'], cwd=root,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-800:]
  assert 'PSNR' in done.stdout and 'step_3' in done.stdout


def test_a_selection_of_other_runs_keeps_its_leaderboard(tmp_path):
  """Two selections among runs of one folder: the second goes beside the first instead of
  replacing it (its best.json files pointed at a leaderboard that no longer listed them);
  the same runs again write to the same folder."""
  runs = [str(tmp_path / name) for name in ('r0', 'r1', 'r2')]
  plain = evaluate.default_out_dir(runs[:2], 'psnr')
  assert plain == str(tmp_path / 'selection_psnr')
  os.makedirs(plain)
  with open(os.path.join(plain, 'selection.json'), 'w') as f:
    json.dump({'ranking': [{'workdir': runs[1]}, {'workdir': runs[0]}]}, f)
  assert evaluate.default_out_dir(runs[:2], 'psnr') == plain
  assert evaluate.default_out_dir(list(reversed(runs[:2])), 'psnr') == plain
  other = evaluate.default_out_dir(runs[2:], 'psnr')
  assert other.startswith(plain + '-') and other != evaluate.default_out_dir(runs, 'psnr')
  assert evaluate.default_out_dir(runs[2:], 'psnr') == other
  # The runs it was asked for decide, not the ranked ones (a run with every checkpoint
  # damaged has none): the same selection rerun stays in its folder.
  with open(os.path.join(plain, 'selection.json'), 'w') as f:
    json.dump({'workdirs': runs[:2], 'ranking': [{'workdir': runs[0]}]}, f)
  assert evaluate.default_out_dir(runs[:2] + runs[:1], 'psnr') == plain


def test_a_damaged_checkpoint_is_one_error_line_not_orbax_leftovers(runs, tmp_path):
  """`launch.py evaluate` of a damaged checkpoint says so in one line; orbax's other reads
  failing again in its closed event loop printed 'Event loop is closed' tracebacks after it
  (2 of 2 runs before they were silenced)."""
  from tests import helpers  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'run'
  shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns(evaluate.EVAL_DIR))
  helpers.damage_checkpoint(run / 'checkpoints' / '6')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([sys.executable, 'launch.py', 'evaluate', '--workdir', str(run),
                         '--step', '6', '--inception-weights', 'none'], cwd=root,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and 'looks damaged' in done.stderr
  assert 'Event loop is closed' not in done.stderr and 'Traceback' not in done.stderr


def test_the_validation_cache_key_watches_the_validation_photos_only(tmp_path):
  """With train/ and val/, a training photo touched (or added) leaves cached evaluations
  valid (select evaluated every checkpoint again); a validation photo changed does not."""
  from tests import helpers  # pylint: disable=g-import-not-at-top
  folder = helpers.make_photo_folder(tmp_path / 'photos', 6, 3)
  config = tiny_config(folder)
  before = evaluate.validation_data(config).key
  train_photo = sorted((tmp_path / 'photos' / 'train').iterdir())[0]
  os.utime(train_photo, ns=(1, 1))
  assert evaluate.validation_data(config).key == before
  val_photo = sorted((tmp_path / 'photos' / 'val').iterdir())[0]
  os.utime(val_photo, ns=(1, 1))
  assert evaluate.validation_data(config).key != before


def test_random_inception_weights_are_cached_only_within_their_process():
  """Random InceptionV3 weights are drawn anew in each process, so the cache key names the
  draw: a later select no longer ranks a cached IS of other random weights beside fresh
  ones (it put the same checkpoint 1st, then 12th)."""
  code = ('from colorize_jax import evaluate; s = evaluate.InceptionSource("random"); '
          'print(s.id == evaluate.InceptionSource("random").id, s.id)')
  ids = []
  for _ in range(2):
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    assert out[0] == 'True'   # one draw per process
    ids.append(out[-1])
  assert ids[0] != ids[1]


def test_inception_score_parts_hold_enough_images():
  """IS averages over parts of >= 50 images (10 at most, 1 at least): 12 images in 10 parts
  scored ~1 whatever the model, since a one-image part scores exactly 1."""
  assert [evaluate.inception_splits(n) for n in (1, 12, 99, 100, 199, 500, 50_000)] == [
      1, 1, 1, 2, 3, 10, 10]
  sharp = np.eye(12)   # 12 images, each sure of its own class: IS 12 over one part
  assert inception.inception_score(sharp, splits=evaluate.inception_splits(12))[0] == (
      pytest.approx(12.0))
  assert inception.inception_score(sharp, splits=10)[0] < 2   # the old split count
