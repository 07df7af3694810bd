"""Tests for colorize_jax.winograd: the transforms are exact, and `correlate` computes the
direct convolution and its two gradients within float32 rounding."""

import fractions
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorize_jax import winograd

# (m, r): the PatchGAN's F(4x4, 4x4), the classic F(2x2, 3x3), and the extremes the points allow.
SIZES = [(4, 4), (2, 3), (2, 4), (4, 2), (1, 4), (6, 3)]


@pytest.mark.parametrize('m,r', SIZES)
def test_transforms_compute_correlation_exactly(m, r):
  """In rational arithmetic A^T ((G g) * (B^T d)) IS the 1-D correlation: any error in the
  construction (points, inverse, transposition) shows as a wrong rational number."""
  at, g, bt = winograd.transforms(m, r)
  n = m + r - 1
  rng = np.random.default_rng(m * 10 + r)
  for _ in range(5):
    d = [fractions.Fraction(int(v)) for v in rng.integers(-9, 10, n)]
    k = [fractions.Fraction(int(v)) for v in rng.integers(-9, 10, r)]
    got = at.dot(g.dot(np.array(k, dtype=object)) * bt.dot(np.array(d, dtype=object)))
    want = [sum(d[i + j] * k[j] for j in range(r)) for i in range(m)]
    assert list(got) == want


def test_too_many_points_is_a_clear_error():
  with pytest.raises(ValueError, match='finite points'):
    winograd.transforms(8, 4)


def _direct(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


# (N, H, W, Cin, Cout, r, m): square and not, sizes that are and are not a multiple of the
# tile (padding and cropping), the smallest input (one output pixel), and the PatchGAN
# layer's proportions.
CASES = [(2, 9, 7, 3, 5, 4, 4), (1, 4, 4, 2, 3, 4, 4), (1, 8, 11, 4, 2, 4, 2),
         (2, 6, 5, 3, 4, 3, 2), (3, 7, 7, 1, 1, 2, 4), (2, 18, 18, 32, 16, 4, 4)]


@pytest.fixture(scope='module')
def results():
  """Value, dx and dkernel of `correlate` and of the direct conv for every case."""
  out = {}
  for case in CASES:
    n, h, w, cin, cout, r, m = case
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(sum(case)), 3)
    x = jax.random.normal(kx, (n, h, w, cin))
    kernel = jax.random.normal(kk, (r, r, cin, cout)) / np.sqrt(r * r * cin)
    g = jax.random.normal(kg, (n, h - r + 1, w - r + 1, cout))

    @jax.jit
    def both(x, kernel, g, m=m):
      fast = jax.vjp(lambda x_, k_: winograd.correlate(x_, k_, m), x, kernel)
      direct = jax.vjp(_direct, x, kernel)
      return (fast[0], *fast[1](g)), (direct[0], *direct[1](g))

    out[case] = both(x, kernel, g)
  return out


@pytest.mark.parametrize('case', CASES)
def test_correlate_matches_direct_convolution(results, case):
  """Value and both gradients agree with lax's convolution to 3e-5 of their largest
  entry: float32 rounding in the transforms, nothing more (a wrong tap, tile offset or
  transposition would be off by O(1))."""
  got, want = results[case]
  for a, b, what in zip(got, want, ('value', 'dx', 'dkernel')):
    scale = float(jnp.abs(b).max())
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=3e-5 * scale,
                               err_msg=what)


@pytest.mark.parametrize('x_shape,k_shape,m,match', [
    ((1, 12, 12, 1), (4, 4, 1, 1), 8, 'finite points'),
    ((1, 3, 12, 1), (4, 4, 1, 1), 4, 'H and W >= r'),
    ((1, 8, 8, 2), (4, 3, 2, 1), 4, 'square kernel'),
    ((1, 8, 8, 2), (4, 4, 3, 1), 4, 'square kernel'),
])
def test_correlate_rejects_what_it_cannot_compute(x_shape, k_shape, m, match):
  with pytest.raises(ValueError, match=match):
    winograd.correlate(jnp.zeros(x_shape), jnp.zeros(k_shape), m)


def test_gradient_composes_with_jax_transforms():
  """`correlate` is a custom_vjp: it must still work under vmap and inside grad of a
  larger function (the discriminator is applied to real and fake batches)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 1, 6, 6, 2))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 2, 3))

  def loss(k, correlate):
    return jnp.sum(jax.vmap(lambda xi: correlate(xi, k))(x) ** 2)

  fast = jax.grad(loss)(kernel, lambda a, k: winograd.correlate(a, k, 4))
  direct = jax.grad(loss)(kernel, _direct)
  np.testing.assert_allclose(fast, direct, rtol=1e-4, atol=1e-4 * float(jnp.abs(direct).max()))
