"""Tests of the U-Net generator and the PatchGAN discriminator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorize_jax import models
from tests import helpers


def _init_shapes(module, *inputs):
  """Variables' and output's shapes without compiling (abstract evaluation)."""
  variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *inputs, train=False))
  out = jax.eval_shape(lambda v: module.apply(v, *inputs, train=False), variables)
  return variables, out


def _num_params(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('size', [32, 64, 128, 256, 512])
def test_generator_maps_l_to_ab_of_the_same_size(size):
  """For every supported size the generator turns [N, S, S, 1] into [N, S, S, 2]."""
  _, out = _init_shapes(models.Generator(width=4), jnp.zeros((2, size, size, 1)))
  assert out.shape == (2, size, size, 2)


@pytest.mark.parametrize('size', [16, 48, 100, 1024])
def test_generator_rejects_unsupported_sizes_clearly(size):
  """Sizes that are not a power of two in [32, 512] fail with a message naming the rule."""
  with pytest.raises(ValueError, match='power of two from 32 to 512'):
    _init_shapes(models.Generator(width=4), jnp.zeros((1, size, size, 1)))


def test_generator_rejects_non_square_input():
  """A non-square or multi-channel input is refused, not silently mis-shaped."""
  with pytest.raises(ValueError, match=r'\[N, S, S, 1\]'):
    _init_shapes(models.Generator(width=4), jnp.zeros((1, 64, 32, 1)))


@pytest.mark.parametrize('size,width,g_params,d_params', [
    (256, 64, 54_410_946, 663_361),   # pix2pix U-Net-256 + 34x34 PatchGAN
    (128, 32, 10_460_002, 167_841),
])
def test_parameter_counts_match_the_reference_architecture(size, width, g_params, d_params):
  """Layer for layer the nets of ../shared/bench (PyTorch and Keras): same parameter counts."""
  g_vars, _ = _init_shapes(models.Generator(width=width), jnp.zeros((1, size, size, 1)))
  d_vars, _ = _init_shapes(models.Discriminator(width=width), jnp.zeros((1, size, size, 1)),
                           jnp.zeros((1, size, size, 2)))
  assert (_num_params(g_vars), _num_params(d_vars)) == (g_params, d_params)


@pytest.mark.parametrize('num_layers,size', [(2, 256), (2, 64), (3, 256), (1, 32)])
def test_discriminator_output_is_a_patch_map(num_layers, size):
  """The PatchGAN returns one logit per patch, on the grid `discriminator_output_size` says."""
  _, out = _init_shapes(models.Discriminator(width=4, num_layers=num_layers),
                        jnp.zeros((2, size, size, 1)), jnp.zeros((2, size, size, 2)))
  side = models.discriminator_output_size(size, num_layers)
  assert out.shape == (2, side, side, 1)


@pytest.mark.parametrize('num_layers,expected', [(2, 34), (3, 70)])
def test_one_logit_sees_exactly_its_receptive_field(num_layers, expected):
  """The gradient of one central logit is non-zero on exactly an RF x RF input window:
  34x34 for the paper's 2 strided layers, 70x70 for pix2pix's 3."""
  disc = models.Discriminator(width=4, num_layers=num_layers, norm='none')
  assert helpers.measured_receptive_field(disc) == expected
  assert models.receptive_field(num_layers) == expected


@pytest.mark.parametrize('norm', ['batch', 'instance', 'none'])
def test_every_normalisation_builds_and_runs(norm):
  """Batch, instance and no normalisation all give finite colours in (-1, 1)."""
  gen = models.Generator(width=4, norm=norm)
  l_norm = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 1), minval=-1, maxval=1)
  variables = models.init_variables(gen, jax.random.PRNGKey(1), l_norm)
  ab = jax.jit(lambda v, x: gen.apply(v, x, train=False))(variables, l_norm)
  assert bool(jnp.all(jnp.abs(ab) < 1.0))
  has_stats = 'batch_stats' in variables
  assert has_stats == (norm == 'batch')


def test_dropout_is_random_in_training_and_off_in_evaluation():
  """Training mode samples dropout from the RNG; evaluation mode is deterministic."""
  gen = models.Generator(width=4, norm='none')
  l_norm = jax.random.uniform(jax.random.PRNGKey(0), (1, 32, 32, 1), minval=-1, maxval=1)
  variables = models.init_variables(gen, jax.random.PRNGKey(1), l_norm)
  train = jax.jit(lambda key: gen.apply(variables, l_norm, train=True, rngs={'dropout': key}))
  evaluate = jax.jit(lambda: gen.apply(variables, l_norm, train=False))
  assert not np.allclose(train(jax.random.PRNGKey(2)), train(jax.random.PRNGKey(3)))
  np.testing.assert_array_equal(train(jax.random.PRNGKey(2)), train(jax.random.PRNGKey(2)))
  np.testing.assert_array_equal(evaluate(), evaluate())


def test_fast_and_plain_convolutions_give_the_same_generator():
  """The whole U-Net computes the same colours with either conv formulation."""
  l_norm = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 1), minval=-1, maxval=1)
  fast, plain = models.Generator(width=4, conv_impl='fast'), models.Generator(
      width=4, conv_impl='plain')
  variables = models.init_variables(fast, jax.random.PRNGKey(1), l_norm)
  run = lambda net: jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, l_norm)
  np.testing.assert_allclose(run(fast), run(plain), atol=1e-5)


@pytest.mark.parametrize('field,value', [('norm', 'group'), ('conv_impl', 'cuda'),
                                         ('dropout', 1.5), ('width', 0)])
def test_make_models_rejects_bad_config_values(field, value):
  """A misspelt or out-of-range model setting is an error that names the field."""
  from experiments import default
  config = default.get_config().model
  config[field] = value
  with pytest.raises(ValueError, match=field):
    models.make_models(config)


def test_generator_of_fixed_depth_runs_at_larger_sizes():
  """A generator built for 32x32 (5 levels) colorizes 64x64 and 96x96 inputs with the same
  parameters, and refuses sizes that are not multiples of 2^5."""
  gen = models.Generator(width=4, depth=models.unet_depth(32))
  variables, _ = _init_shapes(gen, jnp.zeros((1, 32, 32, 1)))
  for size in (64, 96):
    out = jax.eval_shape(lambda v, x: gen.apply(v, x, train=False), variables,
                         jnp.zeros((1, size, size, 1)))
    assert out.shape == (1, size, size, 2)
  with pytest.raises(ValueError, match='multiple of 32'):
    jax.eval_shape(lambda v, x: gen.apply(v, x, train=False), variables,
                   jnp.zeros((1, 48, 48, 1)))
