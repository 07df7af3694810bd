"""bfloat16 mixed precision: computation in bf16, parameters and optimizer state in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorize_jax import color
from colorize_jax import steps
from tests import helpers

BATCH = 4


@pytest.fixture(scope='module')
def gans():
  """The same tiny config in float32 and in bfloat16."""
  out = {}
  for name in ('float32', 'bfloat16'):
    config = helpers.tiny_config('unused')
    config.model.width = 8
    config.model.dropout = 0.0  # compare the two precisions on the same function
    config.model.compute_dtype = name
    out[name] = steps.GAN.from_config(config)
  return out


def photos():
  blocks = np.random.default_rng(0).integers(0, 256, (BATCH, 4, 4, 3), dtype=np.uint8)
  return np.kron(blocks, np.ones((1, 8, 8, 1), np.uint8))


def test_bf16_generator_matches_float32_within_tolerance(gans):
  """With the same float32 parameters, the bf16 generator's colours are those of float32
  up to bf16 rounding (a few hundredths of the [-1, 1] range)."""
  state = gans['float32'].init(jax.random.PRNGKey(0), helpers.TINY_SIZE)
  l_norm, _ = color.rgb_to_model_inputs(photos())
  out = {name: jax.jit(lambda g, l, gan=gan: steps.generate_ab(gan, g, l))(state.generator,
                                                                             l_norm)
         for name, gan in gans.items()}
  assert out['bfloat16'].dtype == jnp.float32
  np.testing.assert_allclose(out['bfloat16'], out['float32'], atol=0.05)
  assert float(jnp.abs(out['bfloat16'] - out['float32']).mean()) < 0.01


def test_bf16_train_step_keeps_float32_state_and_matches_losses(gans):
  """A bf16 train step keeps params, batch statistics and Adam moments in float32, and its
  losses and updated params stay close to the float32 step's."""
  state = gans['float32'].init(jax.random.PRNGKey(0), helpers.TINY_SIZE)
  batch = {'image': photos()}
  results = {}
  for name, gan in gans.items():
    new_state, metrics = jax.jit(lambda s, b, gan=gan: steps.train_step(s, b, gan))(state, batch)
    results[name] = (new_state, metrics)
  bf16_state, bf16_metrics = results['bfloat16']
  f32_state, f32_metrics = results['float32']
  floats = [x for x in jax.tree.leaves(bf16_state.generator)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  assert {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}
  for key in ('g_l1', 'g_adversarial', 'd_loss'):
    np.testing.assert_allclose(bf16_metrics[key], f32_metrics[key], rtol=0.03, err_msg=key)
  # One Adam step moves each parameter by about the learning rate, in either precision.
  delta = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), bf16_state.generator.params,
                       f32_state.generator.params)
  assert max(jax.tree.leaves(delta)) < 5e-4


def test_bf16_prepared_generator_keeps_kernels_in_bf16_and_gives_the_same_colours(gans):
  """Prepared for inference, the bf16 generator stores its re-laid-out kernels in bf16
  (half the memory) and colours exactly as the bf16 NetState does."""
  gan = gans['bfloat16']
  generator = gan.init(jax.random.PRNGKey(0), helpers.TINY_SIZE).generator
  prepared = steps.prepare_generator(gan, generator, helpers.TINY_SIZE)
  assert {x.dtype for x in jax.tree.leaves(prepared.variables['prepared'])} == {
      jnp.dtype(jnp.bfloat16)}
  l_norm, _ = color.rgb_to_model_inputs(photos())
  generate = jax.jit(lambda g, l: steps.generate_ab(gan, g, l))
  np.testing.assert_allclose(generate(prepared, l_norm), generate(generator, l_norm),
                             rtol=1e-6, atol=1e-6)
