"""Winograd's minimal filtering F(m x m, r x r) for a stride-1 'valid' correlation.

Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural Networks". Each m x m
tile of the output is computed from the (m + r - 1)^2 input tile d that covers it as

    Y = A^T [ (G g G^T) * (B^T d B) ] A,

so the multiplications of the layer become (m + r - 1)^2 independent matmuls
[tiles, Cin] x [Cin, Cout] instead of the m^2 r^2 of the direct convolution: 49 instead
of 256 for F(4x4, 4x4), 5.2x fewer. The transforms are additions of tile entries, i.e.
passes over memory, so they pay off only where the filter is big: for the PatchGAN's
4x4 stride-1 layer F(4x4, 4x4) ran at 1.4-2.5x Eigen's convolution for the forward
pass and both gradients (`layers.conv4x4_s1_plan`); for the 2x2 convolutions the other
layers reduce to, F(2x2, 2x2) and F(4x4, 2x2) ran at 0.6-1.1x, so they do not use it.

A, G and B come from the Toom-Cook construction with the interpolation points 0, 1,
-1, 2, -2, 1/2, -1/2 (as many as m + r - 2 needs) and infinity, computed exactly in
rational arithmetic. Rounding grows with the points' magnitude: for F(4x4, 4x4) in
float32 the result differs from the direct convolution by ~1e-5 of its largest value
(tests/test_winograd.py); in bfloat16 by 0.14 of it (the direct bfloat16 convolution:
0.004), so this is for float32 only.

The gradients are written out (`jax.custom_vjp`): autodiff of the forward pass gives
XLA scatters that ran 13-17x slower than the transposes written here.
"""

import fractions
import functools

import jax
import jax.numpy as jnp
import numpy as np

Fraction = fractions.Fraction

# Finite interpolation points, in the order they are taken: small magnitudes first.
POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2),
          Fraction(1, 2), Fraction(-1, 2))


def _vandermonde(points, k: int) -> list[list[Fraction]]:
  """Evaluation of a polynomial with k coefficients at `points` and at infinity."""
  return [[p ** i for i in range(k)] for p in points] + [[Fraction(0)] * (k - 1) + [Fraction(1)]]


def _inverse(rows: list[list[Fraction]]) -> list[list[Fraction]]:
  """Exact inverse of a square rational matrix (Gauss-Jordan)."""
  n = len(rows)
  a = [list(r) + [Fraction(int(i == j)) for j in range(n)] for i, r in enumerate(rows)]
  for col in range(n):
    pivot = next(i for i in range(col, n) if a[i][col] != 0)
    a[col], a[pivot] = a[pivot], a[col]
    a[col] = [v / a[col][col] for v in a[col]]
    for i in range(n):
      if i != col and a[i][col] != 0:
        f = a[i][col]
        a[i] = [vi - f * vc for vi, vc in zip(a[i], a[col])]
  return [r[n:] for r in a]


@functools.lru_cache(maxsize=None)
def transforms(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Exact (object arrays of Fractions) A^T [m, n], G [n, r] and B^T [n, n], n = m + r - 1.

  For a 1-D input d of length n and filter g of length r, A^T ((G g) * (B^T d)) is the
  correlation y_i = sum_k d_{i+k} g_k, i < m. (It is the transpose of Toom-Cook's
  linear convolution, whose evaluation matrices are A and G and whose interpolation
  matrix is B.)
  """
  n = m + r - 1
  if not 1 <= n - 1 <= len(POINTS):
    raise ValueError(f'F({m}, {r}) needs {n - 1} finite points; at most {len(POINTS)} exist')
  points = POINTS[:n - 1]
  at = np.array(_vandermonde(points, m), dtype=object).T
  g = np.array(_vandermonde(points, r), dtype=object)
  bt = np.array(_inverse(_vandermonde(points, n)), dtype=object).T
  return at, g, bt


def _combine(coefficients, parts):
  """sum_i coefficients[i] * parts[i], skipping zeros and multiplications by +-1."""
  out = None
  for c, p in zip(coefficients, parts):
    if c == 0:
      continue
    term = p if c == 1 else (-p if c == -1 else float(c) * p)
    out = term if out is None else out + term
  return out if out is not None else jnp.zeros_like(parts[0])


# Between the two 1-D passes of each 2-D transform: without it XLA fuses both passes into
# one loop that recomputes the first pass for every output (n x the work; the output
# transform of F(4x4, 4x4) took 72 ms instead of 11 ms at 128/b16/w32).
_barrier = jax.lax.optimization_barrier


def _tiles(x: jnp.ndarray, bt: np.ndarray, m: int, count: int, axis: int) -> jnp.ndarray:
  """B^T applied to the `count` length-n windows at stride m along `axis`.

  x has m * (count + q) entries along `axis` (q = ceil((n - m) / m)); the result has the n
  transformed taps on a new leading axis and `count` entries along `axis` (+1).
  """
  n = bt.shape[0]
  blocks = -(-(n - m) // m)
  s = x.shape
  x = x.reshape(s[:axis] + (count + blocks, m) + s[axis + 1:])
  taps = [x[(slice(None),) * axis + (slice(a // m, a // m + count), a % m)] for a in range(n)]
  return jnp.stack([_combine(bt[u], taps) for u in range(n)])


def _tiles_transpose(y: jnp.ndarray, bt: np.ndarray, m: int, axis: int) -> jnp.ndarray:
  """The adjoint of `_tiles`: overlap-add of the windows. y [n, ...count on axis...]."""
  n = bt.shape[0]
  blocks = -(-(n - m) // m)
  per_tap = [_combine(bt[:, a], list(y)) for a in range(n)]   # each [..., count, ...]
  zero = jnp.zeros_like(per_tap[0])
  total = None
  for offset in range(blocks + 1):
    phases = jnp.stack([per_tap[offset * m + p] if offset * m + p < n else zero
                        for p in range(m)], axis=axis + 1)
    pads = [(0, 0)] * phases.ndim
    pads[axis] = (offset, blocks - offset)
    phases = jnp.pad(phases, pads)
    total = phases if total is None else total + phases
  s = total.shape
  return total.reshape(s[:axis] + (s[axis] * m,) + s[axis + 2:])


def _geometry(h: int, w: int, m: int, r: int):
  n = m + r - 1
  ho, wo = h - r + 1, w - r + 1
  th, tw = -(-ho // m), -(-wo // m)
  blocks = -(-(n - m) // m)
  return n, ho, wo, th, tw, blocks


def _forward(x, kernel, m):
  r = kernel.shape[0]
  if kernel.ndim != 4 or kernel.shape[1] != r or x.ndim != 4 or x.shape[3] != kernel.shape[2]:
    raise ValueError(f'correlate needs x [N, H, W, C] and a square kernel [r, r, C, D], '
                     f'got {x.shape} and {kernel.shape}')
  if min(x.shape[1:3]) < r:
    raise ValueError(f'correlate needs H and W >= r = {r}, got {x.shape}')
  at, g, bt = transforms(m, r)
  batch, h, w, cin = x.shape
  cout = kernel.shape[3]
  n, ho, wo, th, tw, blocks = _geometry(h, w, m, r)
  x = jnp.pad(x, ((0, 0), (0, m * (th + blocks) - h), (0, m * (tw + blocks) - w), (0, 0)))
  rows = _barrier(_tiles(x, bt, m, th, axis=1))                   # [u, N, th, W', C]
  tiles = _tiles(rows, bt, m, tw, axis=3)                         # [v, u, N, th, tw, C]
  tiles = tiles.reshape(n * n, batch * th * tw, cin)
  gf = jnp.asarray(g.astype(float), kernel.dtype)
  u = jnp.einsum('ua,abcd,vb->vucd', gf, kernel, gf).reshape(n * n, cin, cout)
  prod = jnp.einsum('pkc,pcd->pkd', tiles, u).reshape(n, n, batch, th, tw, cout)
  cols = _barrier(jnp.stack([_combine(at[j], list(prod)) for j in range(m)]))  # [j, u, ...]
  y = jnp.stack([jnp.stack([_combine(at[i], list(cols[j])) for j in range(m)], axis=3)
                 for i in range(m)], axis=2)                      # [N, th, i, tw, j, D]
  y = y.reshape(batch, m * th, m * tw, cout)[:, :ho, :wo]
  return y, (tiles, u)


def _backward(m, residuals, grad):
  tiles, u = residuals
  n = int(round(tiles.shape[0] ** 0.5))
  r = n - m + 1
  at, g, bt = transforms(m, r)
  batch, ho, wo, cout = grad.shape
  cin = u.shape[1]
  h, w = ho + r - 1, wo + r - 1
  _, _, _, th, tw, _ = _geometry(h, w, m, r)
  grad = jnp.pad(grad, ((0, 0), (0, m * th - ho), (0, m * tw - wo), (0, 0)))
  grad = grad.reshape(batch, th, m, tw, m, cout)
  cols = _barrier(jnp.stack([_combine(at[:, v], [grad[:, :, :, :, j] for j in range(m)])
                             for v in range(n)]))                 # [v, N, th, i, tw, D]
  dprod = jnp.stack([jnp.stack([_combine(at[:, uu], [cols[v, :, :, i] for i in range(m)])
                                for uu in range(n)]) for v in range(n)])
  dprod = dprod.reshape(n * n, batch * th * tw, cout)
  dtiles = jnp.einsum('pkd,pcd->pkc', dprod, u).reshape(n, n, batch, th, tw, cin)
  du = jnp.einsum('pkc,pkd->pcd', tiles, dprod).reshape(n, n, cin, cout)
  gf = jnp.asarray(g.astype(float), u.dtype)
  dkernel = jnp.einsum('ua,vucd,vb->abcd', gf, du, gf)
  rows = _barrier(_tiles_transpose(dtiles, bt, m, axis=3))        # [u, N, th, W', C]
  dx = _tiles_transpose(rows, bt, m, axis=1)                      # [N, H', W', C]
  return dx[:, :h, :w], dkernel


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def correlate(x: jnp.ndarray, kernel: jnp.ndarray, m: int = 4) -> jnp.ndarray:
  """Stride-1 'valid' cross-correlation computed with Winograd's F(m x m, r x r).

  The same function as `lax.conv_general_dilated(x, kernel, (1, 1), 'VALID')` in NHWC /
  HWIO, up to float rounding (~1e-5 of the output's range for F(4x4, 4x4) in float32).

  Args:
    x: [N, H, W, Cin], H and W >= r.
    kernel: [r, r, Cin, Cout].
    m: output tile side; m + r - 2 <= len(POINTS).

  Returns:
    [N, H - r + 1, W - r + 1, Cout].
  """
  return _forward(x, kernel, m)[0]


correlate.defvjp(_forward, _backward)
