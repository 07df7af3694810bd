"""Tests for colorize_jax.layers: every 'fast' formulation equals 'plain', and the modules
are drop-in replacements for nn.Conv / nn.ConvTranspose."""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorize_jax import layers

# (N, H, W, Cin, Cout): 1x1 / 2x2 inputs, odd channel counts, non-square maps.
S2_SHAPES = [(1, 2, 2, 3, 5), (2, 4, 6, 1, 4), (1, 6, 4, 5, 3)]
T_SHAPES = [(1, 1, 1, 3, 5), (2, 2, 3, 4, 1), (1, 3, 2, 5, 3)]
S1_SHAPES = [(1, 2, 2, 3, 2), (2, 5, 3, 1, 3), (1, 4, 6, 5, 1)]

TABLES = {
    's2': (layers.CONV4X4_S2_FORMULATIONS, S2_SHAPES, lambda h: h // 2),
    't': (layers.CONV_TRANSPOSE4X4_S2_FORMULATIONS, T_SHAPES, lambda h: 2 * h),
    's1': (layers.CONV4X4_S1_FORMULATIONS, S1_SHAPES, lambda h: h - 1),
}
PUBLIC = {'s2': layers.conv4x4_s2, 't': layers.conv_transpose4x4_s2, 's1': layers.conv4x4_s1}
PLANS = {'s2': layers.conv4x4_s2_plan, 't': layers.conv_transpose4x4_s2_plan,
         's1': layers.conv4x4_s1_plan}


def _inputs(shape, out_hw, seed=0):
  n, h, w, cin, cout = shape
  kx, kk, kg = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.normal(kx, (n, h, w, cin))
  kernel = jax.random.normal(kk, (4, 4, cin, cout)) * 0.5
  g = jax.random.normal(kg, (n, out_hw(h), out_hw(w), cout))
  return x, kernel, g


def _value_and_grads(fn, x, kernel, g):
  y, vjp = jax.vjp(fn, x, kernel)
  return (y, *vjp(g))


def _assert_same(got, want):
  for a, b, what in zip(got, want, ('value', 'dx', 'dkernel')):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4,
                               err_msg=what)


def _plans(kind):
  """Every plan the kind's rule can return, plus one that mixes three different
  formulations so that a swap of dx and dW inside the custom_vjp cannot go unnoticed."""
  names = list(TABLES[kind][0])
  plans = {PLANS[kind](h, c, c) for h in (1, 2, 4, 8, 16, 32, 64, 256) for c in (1, 64)}
  plans.add(layers.Plan(names[-1], names[0], names[1 % len(names)]))
  return sorted(plans)


@pytest.fixture(scope='module')
def results():
  """For every kind and test shape: value, dx and dkernel of every formulation and of
  every custom_vjp plan, all from ONE jitted program per shape (compiles dominate)."""
  out = {}
  for kind, (forms, shapes, out_hw) in TABLES.items():
    fns = {('form', name): fn for name, fn in forms.items()}
    fns.update({('plan', plan): layers._mixed(kind, plan) for plan in _plans(kind)})
    run_all = jax.jit(lambda x, k, g: [_value_and_grads(f, x, k, g) for f in fns.values()])
    for shape in shapes:
      got = run_all(*_inputs(shape, out_hw))
      for key, value in zip(fns, got):
        out[(kind, shape) + key] = value
  return out


@pytest.mark.parametrize('kind,form,shape', [
    (kind, form, shape) for kind, (forms, shapes, _) in TABLES.items()
    for form, shape in itertools.product(forms, shapes) if form != 'plain'])
def test_formulation_matches_plain(results, kind, form, shape):
  """Each formulation the 'fast' path can pick computes plain's value, dx and dkernel."""
  want = results[kind, shape, 'form', 'plain']
  got = results[kind, shape, 'form', form]
  assert got[0].shape == want[0].shape
  _assert_same(got, want)


@pytest.mark.parametrize('kind', sorted(TABLES))
def test_every_plan_matches_plain(results, kind):
  """The custom_vjp mixing of formulations (forward from one, dx and dW from others),
  for every plan a rule can return, equals plain in value and both gradients."""
  for plan in _plans(kind):
    for shape in TABLES[kind][1]:
      _assert_same(results[kind, shape, 'plan', plan], results[kind, shape, 'form', 'plain'])


def test_xla_cpu_options_leave_out_what_xla_flags_sets():
  """The plans' XLA options are passed unless $XLA_FLAGS names the same flag (with any
  value): the caller's setting is not overridden; other flags do not matter."""
  (name, value), = layers.XLA_CPU_OPTIONS.items()
  assert layers.xla_cpu_compiler_options('') == {name: value}
  assert layers.xla_cpu_compiler_options('--xla_foo=1') == {name: value}
  assert layers.xla_cpu_compiler_options(f'--{name}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT') == {}


def test_plain_matches_lax_reference():
  """'plain' itself is the textbook op: lax.conv_transpose (what nn.ConvTranspose runs)
  and the strided / stride-1 lax conv, so matching it means matching Flax."""
  x, kernel, _ = _inputs((1, 3, 2, 2, 3), lambda h: h)
  want = jax.lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)),
                                dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(layers.conv_transpose4x4_s2(x, kernel, 'plain'), want,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind,h,cout', [('s2', 64, 3), ('t', 8, 3), ('s1', 3, 3), ('s1', 9, 16)])
def test_fast_public_path_under_jit(kind, h, cout):
  """conv*(impl='fast') equals impl='plain' under jit and grad, on a map big enough
  to take the big-map branch of the rule and, for the stride-1 conv, with enough output
  channels to take Winograd (small ones are covered above)."""
  forms, _, out_hw = TABLES[kind]
  x, kernel, g = _inputs((2, h, h, 2, cout), out_hw, seed=1)

  def loss(impl):
    return jax.jit(jax.value_and_grad(
        lambda x_, k_: jnp.vdot(PUBLIC[kind](x_, k_, impl), g), argnums=(0, 1)))

  (v_fast, (gx_fast, gk_fast)) = loss('fast')(x, kernel)
  (v_plain, (gx_plain, gk_plain)) = loss('plain')(x, kernel)
  np.testing.assert_allclose(v_fast, v_plain, rtol=1e-4)
  _assert_same((v_fast, gx_fast, gk_fast), (v_plain, gx_plain, gk_plain))


def test_winograd_only_in_float32():
  """Winograd's transforms round at ~1e-5 of the output's range in float32 but at 0.14 in
  bfloat16: a bfloat16 stride-1 layer runs Eigen's conv, exactly what 'plain' computes."""
  assert layers.conv4x4_s1_plan(32, 64, 128, jnp.float32).fwd == 'winograd'
  x, kernel, _ = _inputs((2, 9, 9, 4, 16), lambda h: h - 1, seed=2)
  x, kernel = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  fast = jax.jit(lambda a, k: layers.conv4x4_s1(a, k, 'fast'))(x, kernel)
  plain = jax.jit(lambda a, k: layers.conv4x4_s1(a, k, 'plain'))(x, kernel)
  assert fast.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(fast, np.float32), np.asarray(plain, np.float32))


@pytest.mark.parametrize('ours,theirs,hw', [
    (layers.Conv4x4S2, lambda f: nn.Conv(f, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1))),
     (6, 4)),
    (layers.ConvTranspose4x4S2,
     lambda f: nn.ConvTranspose(f, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2))), (3, 2)),
    (layers.Conv4x4S1, lambda f: nn.Conv(f, (4, 4), padding=((1, 1), (1, 1))), (5, 4)),
])
@pytest.mark.parametrize('impl', layers.CONV_IMPLS)
def test_module_is_drop_in_for_flax(ours, theirs, hw, impl):
  """Our module takes the parameters of the Flax layer it replaces (same tree, same
  shapes) and gives the same output with them."""
  x = jax.random.normal(jax.random.PRNGKey(2), (2, *hw, 3))
  ref = theirs(5)
  params = ref.init(jax.random.PRNGKey(3), x)
  params = jax.tree.map(lambda p: p + 0.1, params)      # a non-zero bias too
  mine = ours(5, impl=impl)
  assert (jax.tree.map(jnp.shape, mine.init(jax.random.PRNGKey(4), x))
          == jax.tree.map(jnp.shape, params))
  np.testing.assert_allclose(mine.apply(params, x), ref.apply(params, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('impl', layers.CONV_IMPLS)
def test_no_bias_module(impl):
  """use_bias=False creates only a kernel, like nn.Conv(use_bias=False)."""
  x = jnp.ones((1, 4, 4, 2))
  params = layers.Conv4x4S2(3, use_bias=False, impl=impl).init(jax.random.PRNGKey(0), x)
  assert set(params['params']) == {'kernel'}


def test_odd_size_is_a_clear_error():
  """The fast strided conv refuses odd H/W with a message, not a reshape traceback."""
  with pytest.raises(ValueError, match='even height and width'):
    layers.conv4x4_s2(jnp.ones((1, 5, 4, 2)), jnp.ones((4, 4, 2, 3)))
  with pytest.raises(ValueError, match='even height and width'):
    layers.conv4x4_s2(jnp.ones((1, 4, 3, 2)), jnp.ones((4, 4, 2, 3)))


def test_too_small_stride1_input_is_a_clear_error():
  """The stride-1 conv needs a 2x2 input for a non-empty output."""
  with pytest.raises(ValueError, match='>= 2'):
    layers.conv4x4_s1(jnp.ones((1, 1, 4, 2)), jnp.ones((4, 4, 2, 3)))


@pytest.mark.parametrize('fn', sorted(PUBLIC.values(), key=lambda f: f.__name__))
def test_unknown_impl_is_a_clear_error(fn):
  """A typo in conv_impl names the allowed values instead of silently picking one."""
  with pytest.raises(ValueError, match="conv_impl must be one of"):
    fn(jnp.ones((1, 4, 4, 2)), jnp.ones((4, 4, 2, 3)), 'fastest')


def _all_formulations():
  return [(kind, form, shape) for kind, (forms, shapes, _) in TABLES.items()
          for form in forms for shape in shapes]


@pytest.mark.parametrize('kind,form,shape', _all_formulations())
def test_prepared_kernel_computes_the_convolution(kind, form, shape):
  """For every formulation, laying the kernel out once (`prepare_kernel`) and applying it
  later (`apply_prepared`) computes the textbook convolution of the raw kernel."""
  x, kernel, _ = _inputs(shape, TABLES[kind][2])
  want = jax.jit(TABLES[kind][0]['plain'])(x, kernel)
  prepared = jax.jit(functools.partial(layers.prepare_kernel, kind, form))(kernel)
  got = jax.jit(functools.partial(layers.apply_prepared, kind, form))(x, prepared)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('module,hw,other_hw,features,other_form_differs', [
    (layers.Conv4x4S2, (6, 6), (2, 2), 3, False),           # 's2d' (few channels) at both
    (layers.ConvTranspose4x4S2, (16, 16), (2, 2), 16, True),  # 'one', then 'subpixel'
    (layers.ConvTranspose4x4S2, (8, 8), (1, 1), 2, False),   # 'taps' (2 channels) at both
    (layers.Conv4x4S1, (5, 4), (3, 3), 1, False),           # 'taps' at both
])
def test_module_with_prepared_kernels(module, hw, other_hw, features, other_form_differs):
  """Applied with mutable=[PREPARED] a layer stores its kernel as its forward formulation
  reads it; applied with that (and no 'params' kernel) it gives the same output. At an
  input size with the same formulation it still does; where the formulation differs it
  is a clear error. init stores nothing extra."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *hw, 3))
  layer = module(features)
  variables = layer.init(jax.random.PRNGKey(1), x)
  assert set(variables) == {'params'}
  want = layer.apply(variables, x)
  got, stored = layer.apply(variables, x, mutable=[layers.PREPARED])
  np.testing.assert_array_equal(got, want)
  form = layers.forward_formulation(layer.op, x.shape, (4, 4, 3, features))
  assert set(stored[layers.PREPARED]) == {f'{form}_kernel'}
  params = {'bias': variables['params']['bias']}      # no kernel: it is not needed
  later = layer.apply({'params': params, **stored}, x)
  np.testing.assert_allclose(later, want, rtol=1e-6, atol=1e-6)
  other = jax.random.normal(jax.random.PRNGKey(2), (1, *other_hw, 3))
  assert (layers.forward_formulation(layer.op, other.shape, (4, 4, 3, features)) != form) == (
      other_form_differs)
  if other_form_differs:
    with pytest.raises(ValueError, match='prepared kernel is not for this input'):
      layer.apply({'params': params, **stored}, other)
  else:
    np.testing.assert_allclose(layer.apply({'params': params, **stored}, other),
                               layer.apply(variables, other), rtol=1e-6, atol=1e-6)
