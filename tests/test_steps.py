"""Tests of the GAN state and the compiled train and eval steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorize_jax import color
from colorize_jax import steps
from experiments import default

IMAGE_SIZE, BATCH = 32, 4


def tiny_config():
  config = default.get_config()
  config.image_size = IMAGE_SIZE
  config.model.width = 8
  # Dropout's noise and a small step size would hide, within the few dozen steps
  # the overfitting test runs, whether the gradients actually fit the batch.
  config.model.dropout = 0.0
  config.optim.g_learning_rate = 2e-3
  return config


def smooth_photos(seed, n=BATCH):
  """Blocky colour images: learnable colour from L, unlike pixel noise."""
  blocks = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
  return np.repeat(np.repeat(blocks, IMAGE_SIZE // 4, axis=1), IMAGE_SIZE // 4, axis=2)


@pytest.fixture(scope='module')
def gan():
  return steps.GAN.from_config(tiny_config())


@pytest.fixture(scope='module')
def train_step(gan):
  return steps.compile_train_step(gan)


@pytest.fixture(scope='module')
def batch():
  return {'image': smooth_photos(0)}


def fresh_state(gan, seed=0):
  return gan.init(jax.random.PRNGKey(seed), IMAGE_SIZE)


def copy_tree(tree):
  return jax.tree.map(np.array, tree)


def assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def trees_differ(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_train_step_updates_both_nets_and_reports_finite_metrics(gan, train_step, batch):
  """One step changes both nets, advances the step counter and reports every metric."""
  state = fresh_state(gan)
  before = copy_tree(state)
  state, metrics = train_step(state, batch)
  assert int(state.step) == 1
  assert trees_differ(before.generator.params, state.generator.params)
  assert trees_differ(before.discriminator.params, state.discriminator.params)
  expected = {'g_loss', 'g_adversarial', 'g_l1', 'd_loss', 'd_real', 'd_fake', 'd_real_prob',
              'd_fake_prob', 'g_grad_norm', 'd_grad_norm', 'g_update_norm', 'd_update_norm',
              'g_param_norm', 'd_param_norm', 'nonfinite'}
  assert set(metrics) == expected
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics['nonfinite']) == 0.0
  assert 0.0 < float(metrics['d_real_prob']) < 1.0


def _forward(state, batch, gan):
  l_norm, real_ab = color.rgb_to_model_inputs(batch['image'])
  return (l_norm, real_ab) + steps.generator_forward(state, l_norm, jax.random.PRNGKey(7), gan)


def test_discriminator_update_leaves_the_generator_untouched(gan, batch):
  """Updating D changes D's params and Adam state and not a bit of G's."""
  @jax.jit
  def d_only(state, batch):
    l_norm, real_ab, fake_ab, _, _ = _forward(state, batch, gan)
    return steps.discriminator_update(state, l_norm, real_ab, fake_ab, gan)[0]

  state = fresh_state(gan)
  new = d_only(state, batch)
  assert_trees_equal(state.generator, new.generator)
  assert trees_differ(state.discriminator.params, new.discriminator.params)
  assert trees_differ(state.discriminator.opt_state, new.discriminator.opt_state)


def test_generator_update_leaves_the_discriminator_untouched_and_matches_autodiff(gan, batch):
  """Updating G changes only G; its gradient (taken through D with respect to the
  generated colours, then pulled back through G) equals plain autodiff of G's loss."""
  @jax.jit
  def g_only(state, batch):
    l_norm, real_ab, fake_ab, pull_back, g_stats = _forward(state, batch, gan)
    new, metrics = steps.generator_update(state, l_norm, real_ab, fake_ab, pull_back, g_stats,
                                          gan)
    (fake_grad,) = pull_back(jax.grad(lambda f: steps.losses.generator_loss(
        steps._apply(gan.discriminator, state.discriminator, l_norm, f, train=True)[0], f,
        real_ab, gan.l1_weight)['total'].mean())(fake_ab))

    def naive_loss(g_params):
      fake = steps._apply(gan.generator, state.generator, l_norm, train=True, params=g_params,
                          rngs={'dropout': jax.random.PRNGKey(7)})[0]
      logits = steps._apply(gan.discriminator, state.discriminator, l_norm, fake, train=True)[0]
      return steps.losses.generator_loss(logits, fake, real_ab, gan.l1_weight)['total'].mean()

    return new, fake_grad, jax.grad(naive_loss)(state.generator.params)

  state = fresh_state(gan)
  new, vjp_grads, naive_grads = g_only(state, batch)
  assert_trees_equal(state.discriminator, new.discriminator)
  assert trees_differ(state.generator.params, new.generator.params)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
               vjp_grads, naive_grads)


def test_tiny_net_overfits_one_batch(gan, train_step, batch):
  """On one fixed batch the generator's L1 falls by a large factor within 40 steps."""
  state = fresh_state(gan)
  l1 = []
  for _ in range(40):
    state, metrics = train_step(state, batch)
    l1.append(float(metrics['g_l1']))
  assert l1[-1] < l1[0] / 3, l1


def test_same_seed_gives_bitwise_identical_params(gan, train_step, batch):
  """Two runs from the same seed agree to the bit after several steps (CPU)."""
  def run(seed):
    state = fresh_state(gan, seed)
    for _ in range(3):
      state, _ = train_step(state, batch)
    return copy_tree(state)

  first, second = run(0), run(0)
  assert_trees_equal(first, second)
  assert trees_differ(first.generator.params, run(1).generator.params)


def test_nonfinite_flag_reports_nan(gan, train_step, batch):
  """A NaN anywhere in the nets shows up in the step's `nonfinite` metric."""
  state = fresh_state(gan)
  params = state.generator.params
  poisoned = jax.tree.map(lambda x: x, params)
  poisoned['to_ab']['bias'] = jnp.full_like(params['to_ab']['bias'], jnp.nan)
  state = state.replace(generator=state.generator.replace(params=poisoned))
  _, metrics = train_step(state, batch)
  assert float(metrics['nonfinite']) == 1.0


def test_eval_step_is_per_example_and_changes_nothing(gan, batch):
  """Validation metrics are per example and each row depends only on its own image."""
  eval_step = steps.compile_eval_step(gan)
  state = fresh_state(gan)
  before = copy_tree(state)
  metrics = eval_step(state, batch)
  assert_trees_equal(before, state)
  assert all(v.shape == (BATCH,) for v in metrics.values())
  assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
  other = dict(batch, image=np.concatenate([batch['image'][:2], smooth_photos(9, 2)]))
  again = eval_step(state, other)
  np.testing.assert_allclose(again['g_l1'][:2], metrics['g_l1'][:2], rtol=1e-6)
  np.testing.assert_allclose(metrics['ab_mae'], metrics['g_l1'] * 110, rtol=1e-6)


@pytest.mark.parametrize('field,value', [('loss.real_label', 0.0), ('loss.real_label', 1.5),
                                         ('optim.d_learning_rate', 0.0),
                                         ('optim.g_b1', 1.5), ('optim.d_b2', 1.0),
                                         ('optim.d_b1', -0.1),
                                         ('loss.l1_weight', float('nan')),
                                         ('loss.d_loss_scale', float('nan')),
                                         ('model.compute_dtype', 'float16')])
def test_bad_config_values_are_clear_errors(field, value):
  """Out-of-range (and NaN) loss and optimizer settings are refused with the field's name."""
  config = tiny_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=name):
    steps.GAN.from_config(config)


def test_programs_get_the_conv_plans_xla_options_unless_overridden(monkeypatch):
  """On the CPU every program `steps.jit` compiles (train, eval, validation, inference)
  gets `layers.XLA_CPU_OPTIONS` (the conv plans train 1.6-2.3x slower without them), a
  caller's compiler_options win, and a flag already in $XLA_FLAGS is not passed twice."""
  from colorize_jax import layers  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != 'cpu':
    pytest.skip('XLA:CPU options')
  (name, value), = layers.XLA_CPU_OPTIONS.items()
  seen = []
  monkeypatch.setattr(jax, 'jit', lambda fun, **kwargs: seen.append(kwargs))
  monkeypatch.setenv('XLA_FLAGS', '')
  steps.jit(None, donate_argnums=0)
  steps.jit(None, compiler_options={name: 'X'})
  monkeypatch.setenv('XLA_FLAGS', f'--{name}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT')
  steps.jit(None)
  assert seen == [{'donate_argnums': 0, 'compiler_options': {name: value}},
                  {'compiler_options': {name: 'X'}}, {}]


def test_prepared_generator_gives_the_same_colours_in_no_more_memory(gan):
  """`prepare_generator` lays the kernels out once: `generate_ab` then gives the colours
  of the NetState, its variables hold as many numbers as the params (the re-laid-out
  kernels replace the originals) in buffers of their own (the NetState may be donated
  to a train step), and another input size is a clear error."""
  generator = fresh_state(gan).generator
  l_norm = color.rgb_to_model_inputs(smooth_photos(3))[0]
  prepared = steps.prepare_generator(gan, generator, IMAGE_SIZE)
  generate = steps.jit(functools.partial(steps.generate_ab, gan))
  want = np.asarray(generate(generator, l_norm))
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  assert prepared.variables['prepared']
  assert (count(prepared.variables['params']) + count(prepared.variables['prepared'])
          == count(generator.params))
  for x in jax.tree.leaves((generator.params, generator.batch_stats)):
    x.delete()     # as a donating train step would
  np.testing.assert_allclose(generate(prepared, l_norm), want, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='prepared for 32x32'):
    steps.generate_ab(gan, prepared, jnp.zeros((1, 64, 64, 1)))


def test_the_discriminators_loss_scale_only_scales_the_logged_loss(gan, train_step, batch):
  """D has its own Adam, which divides each gradient by its running magnitude: a step with
  pix2pix's halved D loss and one with the paper's whole loss (the default) move D's
  weights alike up to Adam's eps (a tenth of an update at most), leave G's but for a few
  weights whose gradient is near zero, and log d_loss in the ratio of the scales (what
  experiments/default.py says of it; with plain SGD D's updates would halve). Over many
  steps GAN training amplifies such differences, as it does rounding differences."""
  config = tiny_config()
  config.loss.d_loss_scale = 0.5
  half = steps.GAN.from_config(config)
  assert gan.d_loss_scale == 1.0
  states = {}
  for name, g, step in (('half', half, steps.compile_train_step(half)),
                        ('whole', gan, train_step)):
    state, metrics = step(fresh_state(g), batch)
    states[name] = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])
                    for params in (state.discriminator.params, state.generator.params)]
    states[name].append(float(metrics['d_loss']))
  (d_half, g_half, loss_half), (d_whole, g_whole, loss_whole) = states['half'], states['whole']
  assert np.abs(d_half - d_whole).max() < 0.1 * config.optim.d_learning_rate
  assert np.mean(np.abs(g_half - g_whole) > 1e-5) < 1e-3
  assert loss_whole == pytest.approx(2 * loss_half, rel=1e-4)


def test_each_step_draws_new_dropout_masks(batch):
  """The generator's dropout noise comes from the run's key folded with the step: from
  the same weights and batch, steps 0 and 1 give different L1 losses (other masks) and
  step 1 twice the same (masks repeated every step would be no regulariser)."""
  config = tiny_config()
  config.model.dropout = 0.5
  gan = steps.GAN.from_config(config)
  step = steps.compile_train_step(gan)
  state = fresh_state(gan)
  l1 = {}
  for name, at in (('step0', 0), ('step1', 1), ('step1 again', 1)):
    fresh = jax.tree.map(jnp.copy, state).replace(step=jnp.asarray(at, state.step.dtype))
    l1[name] = float(step(fresh, batch)[1]['g_l1'])
  assert l1['step1'] == l1['step1 again']
  assert l1['step0'] != l1['step1']
