"""The U-Net's and PatchGAN's 4x4 convolutions, written for XLA's CPU backend.

XLA lowers a transposed convolution (and the input gradient of a strided one) to a
convolution over an input with zeros inserted between pixels (`lhs_dilation=2`),
and autodiff gives its kernel gradient as a convolution with a dilated window. On
the CPU both can run at well under 1 GFLOP/s, against ~100 for a matmul
(../shared/bench, `bench_convt.py`). XLA:CPU also runs a convolution either through
YNNPACK or through Eigen, and on a 2-core AVX2 CPU Eigen's were up to 3x faster
(`XLA_CPU_OPTIONS`; BENCHMARKS.md).

So 'fast' computes each layer as a `jax.custom_vjp` whose forward pass, input
gradient and kernel gradient are each taken from whichever of a few equivalent
formulations measured fastest for that shape (shapes are static under jit):

* 'plain'  - the textbook lax convolution (strided, or lhs-dilated for the transpose);
* 's2d'    - space-to-depth of the padded input, then a 2x2 stride-1 conv;
* 'im2col' - space-to-depth plus the four 2x2 window shifts concatenated on the
             channel axis, then ONE matmul with K = 16 Cin (XLA's fast dot path);
* transposed conv: 'subpixel' (four 2x2 stride-1 convs, one per output phase),
  'subpixel_matmul' (the same four phases as one batched matmul, K = 4 Cin),
  'one' (one 2x2 conv to 4 Cout over the input padded by 1, then depth-to-space and
  a 1-pixel crop: the adjoint of 's2d');
* 'taps'   - for few output channels: one matmul to every tap's contribution at
             every pixel ([NHW, Cin] x [Cin, taps Cout]), then shifted adds;
* stride-1 conv: 'winograd' (Winograd's F(4x4, 4x4), 5.2x fewer multiplications;
             colorize_jax/winograd.py).

Every formulation computes the same function (tests/test_layers.py checks values and
both gradients against 'plain'), so the choice only changes speed. For inference with
fixed weights, the kernel re-layouts a forward formulation does on every call can be
done once (`prepare_kernel` / `apply_prepared`, the modules' `PREPARED` collection,
`steps.prepare_generator`). 'plain' keeps the
textbook formulation (what `nn.Conv` / `nn.ConvTranspose` run); parameter names and
shapes are those of `nn.Conv` / `nn.ConvTranspose`, so a checkpoint works with either.
"""

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from colorize_jax import winograd

ConvImpl = str  # 'fast' | 'plain'
CONV_IMPLS = ('fast', 'plain')

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
KERNEL_SIZE = 4


def _check_impl(impl: str) -> None:
  if impl not in CONV_IMPLS:
    raise ValueError(f'conv_impl must be one of {CONV_IMPLS}, got {impl!r}')


def _conv(x, kernel, strides=(1, 1), padding='VALID', lhs_dilation=None):
  return lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=padding, lhs_dilation=lhs_dilation,
      dimension_numbers=_DIMENSION_NUMBERS)


_SHIFTS2 = ((0, 0), (0, 1), (1, 0), (1, 1))
_SHIFTS4 = tuple((i, j) for i in range(KERNEL_SIZE) for j in range(KERNEL_SIZE))


def _pad1(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _windows2x2(x: jnp.ndarray, h: int, w: int) -> jnp.ndarray:
  """The four h x w shifts (0/1 rows, 0/1 cols) of x stacked on channels: [N, h, w, 4C]."""
  return jnp.concatenate([x[:, s:s + h, r:r + w] for s in (0, 1) for r in (0, 1)], axis=-1)


def space_to_depth(x: jnp.ndarray) -> jnp.ndarray:
  """[N, 2H, 2W, C] -> [N, H, W, 4C], channel index (2 * row_phase + col_phase) * C + c."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // 2, w // 2, 4 * c)


def depth_to_space(x: jnp.ndarray) -> jnp.ndarray:
  """Inverse of `space_to_depth`: [N, H, W, 4C] -> [N, 2H, 2W, C]."""
  n, h, w, c4 = x.shape
  c = c4 // 4
  x = x.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, 2 * h, 2 * w, c)


# --------------------------------------------------------------------------------------
# Formulations. Each is f(x, kernel) -> y with the conventions of its public function.
# --------------------------------------------------------------------------------------
def _s2_kernel_2x2(kernel):
  """[4, 4, Cin, Cout] -> [2, 2, 4 Cin, Cout]: tap (2i + p, 2j + q) reads s2d phase (p, q)."""
  cin, cout = kernel.shape[2:]
  k = kernel.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
  return k.reshape(2, 2, 4 * cin, cout)


def _s2_plain(x, kernel):
  return _conv(x, kernel, strides=(2, 2), padding=((1, 1), (1, 1)))


def _s2_s2d_prepared(x, kernel_2x2):
  return _conv(space_to_depth(_pad1(x)), kernel_2x2)


def _s2_im2col(x, kernel):
  patches = _windows2x2(space_to_depth(_pad1(x)), x.shape[1] // 2, x.shape[2] // 2)
  return jnp.dot(patches, _s2_kernel_2x2(kernel).reshape(-1, kernel.shape[3]))


def _t_plain(x, kernel):
  return _conv(x, kernel, padding=((2, 2), (2, 2)), lhs_dilation=(2, 2))


def _t_phase_kernels(kernel):
  """[4, 4, Cin, Cout] -> the four [2, 2, Cin, Cout] kernels of output phases (a, b)."""
  return tuple(kernel[a::2, b::2] for a in (0, 1) for b in (0, 1))


def _t_subpixel_prepared(x, phase_kernels):
  # Output row 2m + a sums input rows m - 1 + a + t (t = 0, 1) with kernel rows
  # a + 2t; with one row of zero padding that is a 2x2 window starting at m + a.
  n, h, w, _ = x.shape
  xp = _pad1(x)
  windows = [xp[:, a:a + h + 1, b:b + w + 1] for a in (0, 1) for b in (0, 1)]
  phases = [_conv(xw, k) for xw, k in zip(windows, phase_kernels)]
  return depth_to_space(jnp.concatenate(phases, axis=-1))


def _t_subpixel_matmul(x, kernel):
  # The four phases of `_t_subpixel_prepared` as one batched matmul [4, NHW, 4 Cin] x [4, 4 Cin, Cout].
  n, h, w, cin = x.shape
  cout = kernel.shape[3]
  xp = _pad1(x)
  patches = jnp.stack([_windows2x2(xp[:, a:a + h + 1, b:b + w + 1], h, w)
                       for a in (0, 1) for b in (0, 1)]).reshape(4, n * h * w, 4 * cin)
  kernels = jnp.stack([k.reshape(4 * cin, cout) for k in _t_phase_kernels(kernel)])
  y = lax.dot_general(patches, kernels, (((2,), (1,)), ((0,), (0,))))
  y = y.reshape(2, 2, n, h, w, cout).transpose(2, 3, 0, 4, 1, 5)
  return y.reshape(n, 2 * h, 2 * w, cout)


def _t_kernel_one(kernel):
  """[4, 4, Cin, Cout] -> [2, 2, Cin, 4 Cout] with K[s, r, :, (pr, pc)] = W[2s+1-pr, 2r+1-pc]."""
  cin, cout = kernel.shape[2:]
  k = kernel.reshape(2, 2, 2, 2, cin, cout)[:, ::-1, :, ::-1]
  return k.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, cin, 4 * cout)


def _t_one_prepared(x, kernel_one):
  # Output pixel 2p - 1 + pr (p = 0..H) is phase pr of a 2x2 window at p of the padded
  # input; computing all H + 1 window rows and cropping one pixel per border costs
  # (H+1)^2 / H^2 times the exact MACs for one big conv instead of four.
  return depth_to_space(_conv(_pad1(x), kernel_one))[:, 1:-1, 1:-1]


def _s1_plain(x, kernel):
  return _conv(x, kernel, padding=((1, 1), (1, 1)))


def _shift_sum(z: jnp.ndarray, taps, h: int, w: int, cout: int) -> jnp.ndarray:
  """sum_t z[:, s:s+h, r:r+w, t-th block of cout channels] for taps t = (s, r)."""
  return sum(z[:, s:s + h, r:r + w, t * cout:(t + 1) * cout] for t, (s, r) in enumerate(taps))


def _s1_taps_kernel(kernel):
  """[4, 4, Cin, Cout] -> [Cin, 16 Cout], tap t = 4 s + r in columns t Cout .. (t + 1) Cout."""
  cin, cout = kernel.shape[2:]
  return kernel.transpose(2, 0, 1, 3).reshape(cin, 16 * cout)


def _s1_taps_prepared(x, taps_kernel):
  # For few output channels: ONE matmul gives every tap's contribution at every pixel
  # ([NHW, Cin] x [Cin, 16 Cout], the MACs of the conv), then 16 shifted adds of a
  # 16 Cout-channel map. Convs and im2col are memory-bound there (N = Cout = 1).
  z = _pad1(jnp.dot(x, taps_kernel))   # padding after the matmul: see `_t_taps_prepared`
  return _shift_sum(z, _SHIFTS4, x.shape[1] - 1, x.shape[2] - 1, taps_kernel.shape[1] // 16)


def _s1_winograd(x, kernel):
  return winograd.correlate(_pad1(x), kernel, 4)


def _t_taps_kernel(kernel):
  """[4, 4, Cin, Cout] -> [Cin, 16 Cout]: the 'one' kernel's four taps side by side."""
  k = _t_kernel_one(kernel)                                     # [2, 2, Cin, 4 Cout]
  return k.transpose(2, 0, 1, 3).reshape(kernel.shape[2], 16 * kernel.shape[3])


def _t_taps_prepared(x, taps_kernel):
  # 'one' (a 2x2 conv to 4 Cout) with its four taps as one matmul and shifted adds,
  # for the 2-channel output layer (where the 2x2 conv has only 8 output channels).
  # Zero padding commutes with the matmul: padding its few-channel product instead of
  # the wide input saves a copy of the input (Cin / 16 Cout times the product's size).
  c4 = taps_kernel.shape[1] // 4
  y = _shift_sum(_pad1(jnp.dot(x, taps_kernel)), _SHIFTS2, x.shape[1] + 1, x.shape[2] + 1, c4)
  return depth_to_space(y)[:, 1:-1, 1:-1]


# The formulations that re-lay out their kernel, as (prepare, apply): the formulation is
# apply(x, prepare(kernel)); inference can prepare once (`prepare_kernel`, below).
_SPLIT_FORMS: dict[tuple[str, str], tuple[Callable, Callable]] = {
    ('s2', 's2d'): (_s2_kernel_2x2, _s2_s2d_prepared),
    ('t', 'subpixel'): (_t_phase_kernels, _t_subpixel_prepared),
    ('t', 'one'): (_t_kernel_one, _t_one_prepared),
    ('s1', 'taps'): (_s1_taps_kernel, _s1_taps_prepared),
    ('t', 'taps'): (_t_taps_kernel, _t_taps_prepared),
}


def _composed(op: str, form: str) -> Callable:
  prepare, apply = _SPLIT_FORMS[op, form]
  return lambda x, kernel: apply(x, prepare(kernel))


CONV4X4_S2_FORMULATIONS: dict[str, Callable] = {
    'plain': _s2_plain, 's2d': _composed('s2', 's2d'), 'im2col': _s2_im2col}
CONV_TRANSPOSE4X4_S2_FORMULATIONS: dict[str, Callable] = {
    'plain': _t_plain, 'subpixel': _composed('t', 'subpixel'),
    'subpixel_matmul': _t_subpixel_matmul, 'one': _composed('t', 'one'),
    'taps': _composed('t', 'taps')}
CONV4X4_S1_FORMULATIONS: dict[str, Callable] = {
    'plain': _s1_plain, 'taps': _composed('s1', 'taps'), 'winograd': _s1_winograd}



class Plan(NamedTuple):
  """Which formulation computes the forward pass, the input and the kernel gradient."""
  fwd: str
  dx: str
  dw: str


@functools.lru_cache(maxsize=None)
def _mixed(table: str, plan: Plan) -> Callable:
  """f(x, kernel) running plan.fwd forward and plan.dx / plan.dw for the two gradients.

  The residuals are (x, kernel), as for autodiff of any of them (all are linear in
  each argument); a gradient nobody uses is removed by XLA under jit.
  """
  forms = _TABLES[table]
  if plan.fwd == plan.dx == plan.dw:
    return forms[plan.fwd]      # autodiff of one formulation is exactly this plan
  fwd, dx, dw = forms[plan.fwd], forms[plan.dx], forms[plan.dw]

  @jax.custom_vjp
  def f(x, kernel):
    return fwd(x, kernel)

  def f_fwd(x, kernel):
    return fwd(x, kernel), (x, kernel)

  def f_bwd(res, g):
    x, kernel = res
    gx = jax.vjp(lambda x_: dx(x_, kernel), x)[1](g)[0]
    gk = jax.vjp(lambda k_: dw(x, k_), kernel)[1](g)[0]
    return gx, gk

  f.defvjp(f_fwd, f_bwd)
  return f


_TABLES = {'s2': CONV4X4_S2_FORMULATIONS, 't': CONV_TRANSPOSE4X4_S2_FORMULATIONS,
           's1': CONV4X4_S1_FORMULATIONS}


# XLA:CPU hands a convolution either to YNNPACK or to Eigen. On a 2-core AMD EPYC (AVX2),
# Eigen's convolutions, including the kernel gradients XLA derives for them, ran at or
# near the matmul rate for every 4x4 / 2x2 shape of these nets, YNNPACK's at 30-75% of
# that; on an AVX-512 EPYC (Zen 4) Eigen's still led (108-209 against 52-178 GFLOP/s).
# The plans below were measured, and are only fast, with convolutions on Eigen and dots
# and reductions on YNNPACK, which this option selects; `steps.jit` compiles every
# program that runs the nets with it (a value in $XLA_FLAGS wins).
XLA_CPU_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type':
                   'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


def xla_cpu_compiler_options(xla_flags: str) -> dict[str, str]:
  """`XLA_CPU_OPTIONS` less those that `xla_flags` (an $XLA_FLAGS value) sets itself.

  For `jax.jit(..., compiler_options=...)`.
  """
  named = {f.lstrip('-').split('=', 1)[0] for f in xla_flags.split()}
  return {k: v for k, v in XLA_CPU_OPTIONS.items() if k not in named}


# The rules below come from interleaved per-layer timings of every candidate on a quiet
# 2-core machine (all conv shapes at 128/b16/w32 and w64, with `XLA_CPU_OPTIONS`); the
# candidates no rule picked (the 'one' conv, and the stride-1 conv, as one matmul) are not
# kept. `h` is the smaller side of the layer's INPUT map. 'Few channels' (< 16) means a
# matmul or conv with a tiny K, which is memory-bound.
_BIG_MAP = 32
_FEW_CHANNELS = 16


def conv4x4_s2_plan(h: int, cin: int, cout: int) -> Plan:
  """Formulations `conv4x4_s2(impl='fast')` uses for an [N, h, w, cin] input."""
  del cout
  # Forward: Eigen's strided conv is fastest from 4x4 maps up (1.1-2.5x); with 1-3
  # input channels (the first layer of each net) and on a 2x2 map the 2x2 conv on the
  # space-to-depth input is (1.5-7x).
  fwd = 's2d' if cin < _FEW_CHANNELS or h <= 2 else 'plain'
  # dx: autodiff of 's2d' (a 2x2 stride-1 conv, then depth-to-space) on big, wide maps
  # (1.2-1.7x); one matmul plus col2im on small maps and few channels (1.2-10x; the
  # lhs-dilated conv of 'plain' is 30x slower at h = 4).
  dx = 's2d' if h >= _BIG_MAP and cin >= _FEW_CHANNELS else 'im2col'
  # dW: Eigen's kernel gradient of the strided conv is fastest at every level
  # (1.2-2x the matmul of transposed patches, 1.5-3x the autodiff of im2col).
  return Plan(fwd, dx, 'plain')


def conv_transpose4x4_s2_plan(h: int, cin: int, cout: int) -> Plan:
  """Formulations `conv_transpose4x4_s2(impl='fast')` uses for an [N, h, w, cin] input."""
  del cin
  # The 2-channel output layer: its four taps as one matmul plus shifted adds for the
  # forward pass and dW, the 'one' conv for dx. Forward: level with 'one' on an AVX2 EPYC
  # (whole generator 1.005x), 2.8-3.5x 'one' per layer on an AVX-512 one, where Eigen's
  # conv with 8 output channels runs at ~25 GFLOP/s (BENCHMARKS.md). dW: 1.4-2.4x
  # (Eigen's kernel gradient with 8 output channels runs at ~6 GFLOP/s on the first).
  if cout < _FEW_CHANNELS:
    return Plan('taps', 'one', 'taps')
  # Forward: four 2x2 convs (one per output phase) up to 8x8 inputs (1.1-2x; 'one'
  # computes (h+1)^2 / h^2 = 1.3-4x the MACs there), then one 2x2 conv to 4 Cout.
  fwd = 'subpixel' if h <= 8 else 'one'
  # dx (a strided conv of the cotangent): the four phases as one batched matmul up to
  # 4x4 (1.5-3x), as four 2x2 convs up to 16x16, 'one' from 32x32 (1.1-3x).
  dx = 'subpixel_matmul' if h <= 4 else ('subpixel' if h < _BIG_MAP else 'one')
  # dW: the batched matmul on the 1x1 and 2x2 maps (1.5x), else Eigen's kernel
  # gradient of the 'one' conv (1.2-2x the matmul of transposed patches; autodiff of
  # 'plain' is 30x slower, Surprise 3 of ../shared/bench/RESULTS.md).
  dw = 'subpixel_matmul' if h <= 2 else 'one'
  return Plan(fwd, dx, dw)


def conv4x4_s1_plan(h: int, cin: int, cout: int, dtype: Any = jnp.float32) -> Plan:
  """Formulations `conv4x4_s1(impl='fast')` uses for an [N, h, w, cin] input of `dtype`."""
  del h, cin
  # The PatchGAN's 1-channel logits: one matmul to the 16 taps plus shifted adds for
  # the forward pass and dW (2-6x Eigen's conv, which runs at 3-5 GFLOP/s with one
  # output channel), Eigen's conv for dx (1.7-2.6x).
  if cout < _FEW_CHANNELS:
    return Plan('taps', 'plain', 'taps')
  # The wide layer before it (a third of the train step): Winograd's F(4x4, 4x4) for
  # all three, 1.4-2.5x Eigen's conv (which itself beats im2col by 1.3-2x). Its
  # transforms round at ~1e-5 of the output's range in float32, but at 0.14 in bfloat16
  # (the direct bfloat16 conv: 0.004): Eigen there.
  if jnp.dtype(dtype) == jnp.float32:
    return Plan('winograd', 'winograd', 'winograd')
  return Plan('plain', 'plain', 'plain')


def formulations(op: str) -> dict[str, Callable]:
  """Name -> f(x, kernel) of every formulation of `op` ('s2', 't' or 's1'), 'plain' first."""
  if op not in _TABLES:
    raise ValueError(f'op must be one of {tuple(_TABLES)}, got {op!r}')
  return dict(_TABLES[op])


def _check_input(op: str, x: jnp.ndarray) -> None:
  if op == 's2' and (x.shape[1] % 2 or x.shape[2] % 2):
    raise ValueError(f'conv4x4_s2 needs even height and width, got {x.shape}')
  if op == 's1' and (x.shape[1] < 2 or x.shape[2] < 2):
    raise ValueError(f'conv4x4_s1 needs height and width >= 2, got {x.shape}')


def plan_for(op: str, x_shape, kernel_shape, dtype: Any = jnp.float32) -> Plan:
  """The 'fast' plan of `op` ('s2', 't' or 's1') for an input [N, H, W, Cin] and kernel
  [4, 4, Cin, Cout] of `dtype`."""
  h, cin, cout = min(x_shape[1:3]), x_shape[3], kernel_shape[3]
  if op == 's2':
    return conv4x4_s2_plan(h, cin, cout)
  if op == 't':
    return conv_transpose4x4_s2_plan(h, cin, cout)
  if op == 's1':
    return conv4x4_s1_plan(h, cin, cout, dtype)
  raise ValueError(f'op must be one of {tuple(_TABLES)}, got {op!r}')


def _run(op: str, x: jnp.ndarray, kernel: jnp.ndarray, impl: ConvImpl) -> jnp.ndarray:
  _check_impl(impl)
  if impl == 'plain':
    return _TABLES[op]['plain'](x, kernel)
  _check_input(op, x)
  return _mixed(op, plan_for(op, x.shape, kernel.shape, jnp.result_type(x, kernel)))(x, kernel)


def conv4x4_s2(x: jnp.ndarray, kernel: jnp.ndarray, impl: ConvImpl = 'fast') -> jnp.ndarray:
  """4x4 convolution with stride 2 and zero padding 1 (pix2pix's encoder layer).

  Args:
    x: [N, H, W, Cin] with H and W even.
    kernel: [4, 4, Cin, Cout] (HWIO, cross-correlation as in `nn.Conv`).
    impl: 'plain' (one strided conv) or 'fast' (per-shape choice, `conv4x4_s2_plan`).

  Returns:
    [N, H/2, W/2, Cout].
  """
  return _run('s2', x, kernel, impl)


def conv_transpose4x4_s2(x: jnp.ndarray, kernel: jnp.ndarray,
                         impl: ConvImpl = 'fast') -> jnp.ndarray:
  """4x4 transposed convolution with stride 2 that doubles H and W (pix2pix's decoder).

  The same function as `nn.ConvTranspose(features, (4, 4), strides=(2, 2),
  padding=((2, 2), (2, 2)))` and as PyTorch's `ConvTranspose2d(k=4, s=2, p=1)` up to
  a spatial flip of the kernel.

  Args:
    x: [N, H, W, Cin].
    kernel: [4, 4, Cin, Cout] (HWIO, applied to the zero-dilated input, unflipped).
    impl: 'plain' (lhs-dilated conv) or 'fast' (per-shape choice,
      `conv_transpose4x4_s2_plan`).

  Returns:
    [N, 2H, 2W, Cout].
  """
  return _run('t', x, kernel, impl)


def conv4x4_s1(x: jnp.ndarray, kernel: jnp.ndarray, impl: ConvImpl = 'fast') -> jnp.ndarray:
  """4x4 convolution with stride 1 and zero padding 1 (the PatchGAN's last two layers).

  The same function as `nn.Conv(features, (4, 4), padding=((1, 1), (1, 1)))`.

  Args:
    x: [N, H, W, Cin] with H, W >= 2.
    kernel: [4, 4, Cin, Cout] (HWIO, cross-correlation).
    impl: 'plain' (lax conv) or 'fast' (per-shape choice, `conv4x4_s1_plan`).

  Returns:
    [N, H - 1, W - 1, Cout].
  """
  return _run('s1', x, kernel, impl)


# --------------------------------------------------------------------------------------
# Inference with the kernels laid out once.
# --------------------------------------------------------------------------------------
# Several forward formulations re-lay out the kernel on every call (the space-to-depth
# taps, the four output-phase kernels, ...): strided copies of whole kernels, which
# also compete with the first convolutions for the two cores. With fixed weights that
# is done once: `prepare_kernel` returns what the formulation reads and `apply_prepared`
# runs the rest of it (`_SPLIT_FORMS`; the other formulations read the raw kernel).
PREPARED = 'prepared'   # the Flax collection the layers keep prepared kernels in


def forward_formulation(op: str, x_shape, kernel_shape, dtype: Any = jnp.float32,
                        impl: ConvImpl = 'fast') -> str:
  """Name of the formulation that computes `op`'s forward pass (a key of its table)."""
  _check_impl(impl)
  return 'plain' if impl == 'plain' else plan_for(op, x_shape, kernel_shape, dtype).fwd


def prepare_kernel(op: str, form: str, kernel: jnp.ndarray) -> Any:
  """`kernel` [4, 4, Cin, Cout] in the layout formulation `form` of `op` reads (a pytree)."""
  split = _SPLIT_FORMS.get((op, form))
  return kernel if split is None else split[0](kernel)


def apply_prepared(op: str, form: str, x: jnp.ndarray, prepared: Any) -> jnp.ndarray:
  """Formulation `form` of `op` on x [N, H, W, Cin] with a kernel from `prepare_kernel`."""
  _check_input(op, x)
  split = _SPLIT_FORMS.get((op, form))
  return (_TABLES[op][form] if split is None else split[1])(x, prepared)


def default_kernel_init() -> Callable[..., Any]:
  """N(0, 0.02), the initialisation of pix2pix and the DCGAN line of work."""
  return nn.initializers.normal(stddev=0.02)


class _Conv4x4(nn.Module):
  """Shared body: parameters as `nn.Conv` / `nn.ConvTranspose` (kernel [4, 4, Cin, Cout], bias).

  Applied with mutable=[PREPARED] (not at init), a layer also stores its kernel as
  `prepare_kernel` lays it out for this input size, under '<formulation>_kernel';
  applied with that collection, it reads the kernel from there (the 'params' kernel
  may then be left out). See `steps.prepare_generator`.
  """
  features: int
  use_bias: bool = True
  impl: ConvImpl = 'fast'
  dtype: Any = None
  op: str = ''   # set by each subclass: 's2', 't' or 's1'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel_shape = (KERNEL_SIZE, KERNEL_SIZE, x.shape[-1], self.features)
    make_bias = lambda: (self.param('bias', nn.initializers.zeros, (self.features,))
                         if self.use_bias else None)
    stored = self.variables.get(PREPARED)
    if stored is not None and not self.is_mutable_collection(PREPARED):
      bias = make_bias()
      dtype = jax.tree.leaves(stored)[0].dtype
      form = forward_formulation(self.op, x.shape, kernel_shape, dtype, self.impl)
      if f'{form}_kernel' not in stored:
        raise ValueError(
            f'{self.name}: its prepared kernel is not for this input ({x.shape}, conv_impl '
            f'{self.impl!r} reads {form}_kernel; prepared: {sorted(stored)}); prepare the '
            f'generator for the size it runs at')
      x, bias = nn.dtypes.promote_dtype(x, bias, dtype=dtype)
      y = apply_prepared(self.op, form, x, stored[f'{form}_kernel'])
    else:
      kernel = self.param('kernel', default_kernel_init(), kernel_shape)
      bias = make_bias()   # after the kernel: the order fixes each parameter's init key
      x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
      if self.is_mutable_collection(PREPARED) and not self.is_initializing():
        form = forward_formulation(self.op, x.shape, kernel_shape, kernel.dtype, self.impl)
        prepared = prepare_kernel(self.op, form, kernel)
        self.put_variable(PREPARED, f'{form}_kernel', prepared)
        y = apply_prepared(self.op, form, x, prepared)
      else:
        y = _run(self.op, x, kernel, self.impl)
    return y + bias if bias is not None else y


class Conv4x4S2(_Conv4x4):
  """`conv4x4_s2` as a Flax layer; parameters as `nn.Conv` (kernel [4, 4, Cin, Cout], bias)."""
  op: str = 's2'


class ConvTranspose4x4S2(_Conv4x4):
  """`conv_transpose4x4_s2` as a Flax layer; parameters as `nn.ConvTranspose`."""
  op: str = 't'


class Conv4x4S1(_Conv4x4):
  """`conv4x4_s1` as a Flax layer; parameters as `nn.Conv(features, (4, 4), padding=1)`."""
  op: str = 's1'
