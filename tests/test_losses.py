"""Tests of the GAN losses on hand-made logits."""

import jax.numpy as jnp
import numpy as np
import pytest

from colorize_jax import losses

LOG2 = float(np.log(2.0))


def _logits(*values):
  """One example per value, each a 2x2 patch map filled with that logit."""
  return jnp.asarray(values, jnp.float32)[:, None, None, None] * jnp.ones((1, 2, 2, 1))


def test_zero_logits_cost_log2_whatever_the_label():
  """An undecided discriminator (p = 0.5) has BCE log 2 against any target."""
  for target in (0.0, 0.9, 1.0):
    np.testing.assert_allclose(losses.adversarial_loss(_logits(0.0, 0.0), target), [LOG2] * 2,
                               rtol=1e-6)


def test_adversarial_loss_matches_the_bce_formula():
  """BCE(x, t) = -t log s(x) - (1 - t) log(1 - s(x)) on ordinary logits."""
  x, t = np.array([-2.0, 0.5, 3.0]), 0.9
  s = 1 / (1 + np.exp(-x))
  expected = -t * np.log(s) - (1 - t) * np.log(1 - s)
  np.testing.assert_allclose(losses.adversarial_loss(_logits(*x), t), expected, rtol=1e-5)


def test_losses_stay_finite_for_extreme_logits():
  """Logits of +-1000 give finite losses (computed on logits, not probabilities)."""
  out = losses.adversarial_loss(_logits(-1000.0, 1000.0), 1.0)
  assert bool(jnp.all(jnp.isfinite(out)))
  np.testing.assert_allclose(out, [1000.0, 0.0], atol=1e-3)


def test_label_smoothing_penalises_overconfident_real_logits():
  """With real label 0.9 a very confident 'real' costs more than with 1, and the best
  logit is log(9) (p = 0.9), not +infinity."""
  confident, fake = _logits(8.0), _logits(-8.0)
  smooth = losses.discriminator_loss(confident, fake, real_label=0.9)['real']
  hard = losses.discriminator_loss(confident, fake, real_label=1.0)['real']
  assert float(smooth[0]) > float(hard[0]) + 0.5
  grid = np.linspace(-5, 10, 1501)
  values = [float(losses.adversarial_loss(_logits(g), 0.9)[0]) for g in grid[::10]]
  best = grid[::10][int(np.argmin(values))]
  assert abs(best - np.log(9.0)) < 0.1
  # Fake patches keep the hard 0 target: smoothing is one-sided.
  np.testing.assert_allclose(
      losses.discriminator_loss(confident, fake, real_label=0.9)['fake'],
      losses.discriminator_loss(confident, fake, real_label=1.0)['fake'])


def test_discriminator_loss_sums_both_terms_and_applies_the_scale():
  """D's total is scale * (real term + fake term)."""
  parts = losses.discriminator_loss(_logits(1.0, -1.0), _logits(-0.5, 2.0), 0.9, scale=0.5)
  np.testing.assert_allclose(parts['total'], 0.5 * (parts['real'] + parts['fake']), rtol=1e-6)


def test_generator_loss_is_adversarial_plus_weighted_l1():
  """G's total = BCE(D(fake), 1) + lambda * mean |fake - real|, per example."""
  fake_ab = jnp.zeros((2, 4, 4, 2))
  real_ab = jnp.stack([jnp.full((4, 4, 2), 0.1), jnp.full((4, 4, 2), -0.3)])
  parts = losses.generator_loss(_logits(0.0, 0.0), fake_ab, real_ab, l1_weight=100.0)
  np.testing.assert_allclose(parts['l1'], [0.1, 0.3], rtol=1e-6)
  np.testing.assert_allclose(parts['adversarial'], [LOG2, LOG2], rtol=1e-6)
  np.testing.assert_allclose(parts['total'], [LOG2 + 10.0, LOG2 + 30.0], rtol=1e-5)


@pytest.mark.parametrize('loss', [
    lambda second: losses.adversarial_loss(_logits(1.0, second), 1.0),
    lambda second: losses.l1_loss(jnp.stack([jnp.full((4, 4, 2), 0.2),
                                             jnp.full((4, 4, 2), second)]),
                                  jnp.zeros((2, 4, 4, 2))),
], ids=['adversarial', 'l1'])
def test_losses_are_per_example(loss):
  """Each example's loss depends only on its own inputs (masking padded rows is valid)."""
  a, b = loss(-3.0), loss(5.0)
  assert a.shape == (2,)
  assert float(a[0]) == float(b[0]) and float(a[1]) != float(b[1])
