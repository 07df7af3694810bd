"""The GAN's state and its pure, jit-compilable train and eval steps.

A `GANState` is one pytree: for each net its params, batch statistics and its own
optax Adam state, plus the step counter and the base RNG key. A `GAN` holds what
is static (the two Flax modules, the two optimizers, the loss weights) and is
closed over by the compiled steps. Colour conversion happens inside the steps, so
batches cross to the device as uint8 RGB (a quarter of the bytes of float32 Lab).
"""

import dataclasses
import functools
import math
import os
from typing import Any, Callable

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import optax

from colorize_jax import color
from colorize_jax import layers
from colorize_jax import losses
from colorize_jax import metrics as metrics_lib
from colorize_jax import models

Batch = dict[str, jnp.ndarray]      # {'image': uint8 [N, H, W, 3], 'mask'?: bool [N]}
Metrics = dict[str, jnp.ndarray]

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@flax.struct.dataclass
class NetState:
  """One network's trainable state: params, BatchNorm statistics, optimizer state."""
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict[str, Any]:
    return {'params': self.params, 'batch_stats': self.batch_stats}


@flax.struct.dataclass
class GANState:
  """Everything a training run must checkpoint to continue bitwise-identically."""
  step: jnp.ndarray              # int32 [], train steps taken
  rng: jnp.ndarray               # uint32 [2], folded with `step` for each step's randomness
  generator: NetState
  discriminator: NetState


@dataclasses.dataclass(frozen=True)
class GAN:
  """The static half of the model: networks, optimizers and loss settings."""
  generator: models.Generator
  discriminator: models.Discriminator
  g_optimizer: optax.GradientTransformation
  d_optimizer: optax.GradientTransformation
  l1_weight: float      # loss.* of the config (`from_config`)
  real_label: float
  d_loss_scale: float

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'GAN':
    """Builds the GAN from a full experiment config (model, optim and loss fields)."""
    dtype_name = config.model.get('compute_dtype', 'float32')
    if dtype_name not in COMPUTE_DTYPES:
      raise ValueError(f'model.compute_dtype must be one of {list(COMPUTE_DTYPES)}, '
                       f'got {dtype_name!r}')
    generator, discriminator = models.make_models(config.model, COMPUTE_DTYPES[dtype_name],
                                                   config.image_size)
    if not 0.0 < config.loss.real_label <= 1.0:
      raise ValueError(f'loss.real_label must be in (0, 1], got {config.loss.real_label}')
    # Written `not x >= 0` so that NaN fails them too.
    if not (config.loss.l1_weight >= 0 and config.loss.d_loss_scale > 0):
      raise ValueError('loss.l1_weight must be >= 0 and loss.d_loss_scale > 0, got '
                       f'{config.loss.l1_weight} and {config.loss.d_loss_scale}')
    opt = config.optim
    for name in ('g_learning_rate', 'd_learning_rate'):
      if not 0 < opt[name] < math.inf:
        raise ValueError(f'optim.{name} must be finite and > 0, got {opt[name]}')
    for name in ('g_b1', 'g_b2', 'd_b1', 'd_b2'):
      if not 0 <= opt[name] < 1:   # Adam's moment decay rates; 1 would never forget
        raise ValueError(f'optim.{name} must be in [0, 1), got {opt[name]}')
    return cls(
        generator=generator,
        discriminator=discriminator,
        g_optimizer=optax.adam(opt.g_learning_rate, b1=opt.g_b1, b2=opt.g_b2),
        d_optimizer=optax.adam(opt.d_learning_rate, b1=opt.d_b1, b2=opt.d_b2),
        l1_weight=config.loss.l1_weight,
        real_label=config.loss.real_label,
        d_loss_scale=config.loss.d_loss_scale)

  def init(self, rng: jnp.ndarray, image_size: int) -> GANState:
    """Initialises both nets and their optimizers for square images of `image_size`.

    Args:
      rng: a `jax.random.PRNGKey`.
      image_size: side of the training images (power of two, 32..512).

    Returns:
      A `GANState` at step 0.
    """
    models.unet_depth(image_size)
    g_rng, d_rng, run_rng = jax.random.split(rng, 3)
    l_norm = jnp.zeros((1, image_size, image_size, 1), jnp.float32)
    ab_norm = jnp.zeros((1, image_size, image_size, 2), jnp.float32)
    g_vars = models.init_variables(self.generator, g_rng, l_norm)
    d_vars = models.init_variables(self.discriminator, d_rng, l_norm, ab_norm)

    def net_state(variables, optimizer):
      return NetState(params=variables['params'],
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=optimizer.init(variables['params']))

    return GANState(step=jnp.zeros((), jnp.int32), rng=run_rng,
                    generator=net_state(g_vars, self.g_optimizer),
                    discriminator=net_state(d_vars, self.d_optimizer))


def abstract_state(gan: GAN, image_size: int, sharding=None) -> Any:
  """The `GANState` structure as `jax.ShapeDtypeStruct`s (no compute), e.g. to restore into.

  Args:
    gan: the static model.
    image_size: the training image size.
    sharding: the sharding every leaf should be restored with (None: default device).
  """
  shapes = jax.eval_shape(functools.partial(gan.init, image_size=image_size),
                          jax.random.PRNGKey(0))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)


def _apply(module, net: NetState, *inputs, train: bool, params=None, rngs=None):
  """Runs `module`; in training mode also returns the updated batch statistics."""
  variables = {'params': net.params if params is None else params,
               'batch_stats': net.batch_stats}
  if not train:
    return module.apply(variables, *inputs, train=False), net.batch_stats
  out, updates = module.apply(variables, *inputs, train=True, rngs=rngs,
                              mutable=['batch_stats'])
  return out, updates.get('batch_stats', {})


def _update(optimizer, net: NetState, grads, batch_stats) -> tuple[NetState, jnp.ndarray]:
  updates, opt_state = optimizer.update(grads, net.opt_state, net.params)
  params = optax.apply_updates(net.params, updates)
  return NetState(params, batch_stats, opt_state), optax.global_norm(updates)


def generator_forward(state: GANState, l_norm: jnp.ndarray, rng: jnp.ndarray, gan: GAN):
  """Runs the generator in training mode and keeps its VJP for the later update.

  Args:
    state: the current `GANState`.
    l_norm: [N, S, S, 1] normalised L.
    rng: key for dropout.
    gan: the static model.

  Returns:
    (fake_ab [N, S, S, 2] in (-1, 1), pull_back: cotangent of fake_ab -> (grads of
    G's params,), the generator's updated batch statistics).
  """
  def generate(g_params):
    return _apply(gan.generator, state.generator, l_norm, train=True, params=g_params,
                  rngs={'dropout': rng})

  return jax.vjp(generate, state.generator.params, has_aux=True)


def discriminator_update(state: GANState, l_norm: jnp.ndarray, real_ab: jnp.ndarray,
                         fake_ab: jnp.ndarray, gan: GAN) -> tuple[GANState, Metrics]:
  """One optimizer step of the discriminator; the generator's state is left untouched.

  Args:
    state: the current `GANState`.
    l_norm: [N, S, S, 1]; real_ab, fake_ab: [N, S, S, 2], all normalised. fake_ab is
      held constant (no gradient flows to the generator).
    gan: the static model.

  Returns:
    (state with a new `discriminator`, metrics d_loss, d_real, d_fake, d_real_prob,
    d_fake_prob, d_grad_norm, d_update_norm, d_param_norm).
  """
  d = state.discriminator
  fake_ab = jax.lax.stop_gradient(fake_ab)

  def objective(d_params):
    real_logits, stats = _apply(gan.discriminator, d, l_norm, real_ab, train=True,
                                params=d_params)
    fake_logits, stats = _apply(gan.discriminator, d.replace(batch_stats=stats), l_norm,
                                fake_ab, train=True, params=d_params)
    parts = losses.discriminator_loss(real_logits, fake_logits, gan.real_label,
                                      gan.d_loss_scale)
    probs = (realism_score(real_logits).mean(), realism_score(fake_logits).mean())
    return parts['total'].mean(), (parts, stats, probs)

  grads, (parts, batch_stats, (real_prob, fake_prob)) = jax.grad(objective, has_aux=True)(
      d.params)
  new_d, update_norm = _update(gan.d_optimizer, d, grads, batch_stats)
  metrics = {
      'd_loss': parts['total'].mean(),
      'd_real': parts['real'].mean(),
      'd_fake': parts['fake'].mean(),
      'd_real_prob': real_prob,
      'd_fake_prob': fake_prob,
      'd_grad_norm': optax.global_norm(grads),
      'd_update_norm': update_norm,
      'd_param_norm': optax.global_norm(new_d.params),
  }
  return state.replace(discriminator=new_d), metrics


def generator_update(state: GANState, l_norm: jnp.ndarray, real_ab: jnp.ndarray,
                     fake_ab: jnp.ndarray, pull_back, g_batch_stats,
                     gan: GAN) -> tuple[GANState, Metrics]:
  """One optimizer step of the generator; the discriminator's state is left untouched.

  The loss's gradient with respect to the generated colours is taken through the
  (frozen) discriminator, so D's own weight gradient is never formed, then pulled
  back through the generator with the VJP of `generator_forward`.

  Args:
    state: the current `GANState`.
    l_norm, real_ab: the batch, normalised; fake_ab, pull_back, g_batch_stats: what
      `generator_forward` returned for it.
    gan: the static model.

  Returns:
    (state with a new `generator`, metrics g_loss, g_adversarial, g_l1, g_grad_norm,
    g_update_norm, g_param_norm).
  """
  def objective(fake):
    # Batch statistics D computes here are discarded: D's running averages are
    # updated by its own step only.
    fake_logits, _ = _apply(gan.discriminator, state.discriminator, l_norm, fake, train=True)
    parts = losses.generator_loss(fake_logits, fake, real_ab, gan.l1_weight)
    return parts['total'].mean(), parts

  fake_grad, parts = jax.grad(objective, has_aux=True)(fake_ab)
  (grads,) = pull_back(fake_grad)
  new_g, update_norm = _update(gan.g_optimizer, state.generator, grads, g_batch_stats)
  metrics = {
      'g_loss': parts['total'].mean(),
      'g_adversarial': parts['adversarial'].mean(),
      'g_l1': parts['l1'].mean(),
      'g_grad_norm': optax.global_norm(grads),
      'g_update_norm': update_norm,
      'g_param_norm': optax.global_norm(new_g.params),
  }
  return state.replace(generator=new_g), metrics


def train_step(state: GANState, batch: Batch, gan: GAN) -> tuple[GANState, Metrics]:
  """One discriminator update, then one generator update, on a batch of RGB photos.

  The generator runs forward once; its VJP is kept while the discriminator is
  updated on the (constant) generated colours, and the updated discriminator then
  judges the same colours for the generator's update (as pix2pix does).

  Args:
    state: the current `GANState` (donated by the compiled step).
    batch: {'image': uint8 [N, H, W, 3]} with H = W = the training image size.
    gan: the static model (closed over, not traced).

  Returns:
    (new state, metrics): scalar float32 means over the batch: g_loss,
    g_adversarial, g_l1 (normalised ab units; x110 for ab units), d_loss, d_real,
    d_fake (unscaled BCE parts), d_real_prob and d_fake_prob (mean probability D
    gives real and generated patches before its update), each net's gradient,
    update and parameter norms, and `nonfinite` (1.0 if a loss or a gradient was
    NaN or infinite, else 0.0).
  """
  l_norm, real_ab = color.rgb_to_model_inputs(batch['image'])
  step_rng = jax.random.fold_in(state.rng, state.step)
  fake_ab, pull_back, g_batch_stats = generator_forward(state, l_norm, step_rng, gan)
  state, d_metrics = discriminator_update(state, l_norm, real_ab, fake_ab, gan)
  state, g_metrics = generator_update(state, l_norm, real_ab, fake_ab, pull_back,
                                      g_batch_stats, gan)
  metrics = {**d_metrics, **g_metrics}
  checked = jnp.stack([metrics[k] for k in ('g_loss', 'd_loss', 'g_grad_norm', 'd_grad_norm')])
  metrics['nonfinite'] = 1.0 - jnp.all(jnp.isfinite(checked)).astype(jnp.float32)
  return state.replace(step=state.step + 1), metrics


@flax.struct.dataclass
class PreparedNet:
  """A net's variables for inference at one input size (`prepare_generator`): each conv
  kernel in the layout its forward formulation reads (collection `layers.PREPARED`),
  'params' without those kernels, and the batch statistics; `size` is the input side
  it was prepared for."""
  variables: dict[str, Any]
  size: int = flax.struct.field(pytree_node=False)


@functools.lru_cache(maxsize=None)
def _prepare_fn(module: models.Generator, size: int) -> Callable[..., Any]:
  """Jitted (params, batch_stats) -> a `PreparedNet`'s variables for size x size inputs."""
  def prepare(params, batch_stats):
    l_norm = jnp.zeros((1, size, size, 1), jnp.float32)
    _, new = module.apply({'params': params, 'batch_stats': batch_stats}, l_norm,
                          train=False, mutable=[layers.PREPARED])
    prepared = new[layers.PREPARED]   # the forward pass itself is dead code, removed by XLA
    prepared_layers = {path[:-1] for path in traverse_util.flatten_dict(prepared)}
    kept = {path: p for path, p in traverse_util.flatten_dict(params).items()
            if not (path[-1] == 'kernel' and path[:-1] in prepared_layers)}
    variables = {'params': traverse_util.unflatten_dict(kept), 'batch_stats': batch_stats,
                 layers.PREPARED: prepared}
    # Buffers of its own (jit would hand back the inputs it returns unchanged): a train
    # step that donates the generator's state must not delete what the prepared net reads.
    return jax.tree.map(jnp.copy, variables)

  return jit(prepare)


def prepare_generator(gan: GAN, generator: NetState, size: int) -> PreparedNet:
  """The generator ready for `generate_ab` on inputs [N, size, size, 1].

  Its outputs are those of `generator` (the same operations), but the kernels'
  re-layouts that the forward formulations do on every call (`layers`) are done here,
  once: 3.5-5.5% of a forward pass at the benchmark sizes (BENCHMARKS.md). It holds no
  more memory than the params: the kernels it re-lays out are left out of 'params'.
  It shares no buffers with `generator` (which may be donated to a train step later).

  Args:
    gan: the static model.
    generator: the generator's `NetState` (its optimizer state is not used).
    size: the input side the prepared net will run at (other sizes may need other
      layouts: `generate_ab` refuses them with a ValueError).

  Returns:
    A `PreparedNet` for `generate_ab`.
  """
  return PreparedNet(_prepare_fn(gan.generator, size)(generator.params, generator.batch_stats),
                     size)


def generate_ab(gan: GAN, generator: NetState | PreparedNet,
                l_norm: jnp.ndarray) -> jnp.ndarray:
  """Colours for normalised L [N, S, S, 1]: normalised ab [N, S, S, 2] (eval mode).

  `generator` is the generator's `NetState`, or for repeated inference at one size
  its `prepare_generator` result (the same outputs, faster).
  """
  if isinstance(generator, PreparedNet):
    if l_norm.shape[1:3] != (generator.size, generator.size):
      raise ValueError(f'this generator was prepared for {generator.size}x{generator.size} '
                       f'inputs, got {l_norm.shape}: prepare it for that size')
    return gan.generator.apply(generator.variables, l_norm, train=False)
  return _apply(gan.generator, generator, l_norm, train=False)[0]


def realism_logits(gan: GAN, discriminator: NetState, l_norm: jnp.ndarray,
                   ab_norm: jnp.ndarray) -> jnp.ndarray:
  """The discriminator's patch logits [N, h, w, 1] for (L, ab) in eval mode."""
  return _apply(gan.discriminator, discriminator, l_norm, ab_norm, train=False)[0]


def realism_score(logits: jnp.ndarray) -> jnp.ndarray:
  """How real a discriminator finds each image: the mean probability of its patch
  logits [N, h, w, 1] -> float32 [N] in (0, 1)."""
  return jax.nn.sigmoid(logits).reshape(logits.shape[0], -1).mean(axis=1)


def quality_step(state: GANState, images: jnp.ndarray, gan: GAN) -> dict[str, Any]:
  """Colorizes a batch and measures it, and its gray baseline (ab = 0), against the photos.

  Args:
    state: a `GANState` (not modified; its generator may be a `PreparedNet`).
    images: real photos, rgb uint8 [N, S, S, 3].
    gan: the static model.

  Returns:
    {'model', 'gray': per-image `metrics.image_metrics` (float32 [N] each),
     'realism': `realism_score`s [N] of {'model', 'gray', 'real'} by the state's
     discriminator, 'model_rgb', 'gray_rgb': float32 [N, S, S, 3] in [0, 1]}.
  """
  l_norm, real_ab_norm = color.rgb_to_model_inputs(images)
  fake_ab_norm = generate_ab(gan, state.generator, l_norm)
  zero = jnp.zeros_like(fake_ab_norm)
  real_rgb = color.to_float_rgb(images)
  real_ab = color.denormalize_ab(real_ab_norm)
  out = {'model_rgb': color.model_outputs_to_rgb(l_norm, fake_ab_norm),
         'gray_rgb': color.model_outputs_to_rgb(l_norm, zero)}
  for name, ab_norm in (('model', fake_ab_norm), ('gray', zero)):
    out[name] = metrics_lib.image_metrics(out[f'{name}_rgb'], real_rgb,
                                          color.denormalize_ab(ab_norm), real_ab)
  out['realism'] = {
      name: realism_score(realism_logits(gan, state.discriminator, l_norm, ab_norm))
      for name, ab_norm in (('model', fake_ab_norm), ('gray', zero), ('real', real_ab_norm))}
  return out


def eval_step(state: GANState, batch: Batch, gan: GAN) -> Metrics:
  """Validation losses of both nets in evaluation mode (running statistics, no dropout).

  Args:
    state: a `GANState` (not modified).
    batch: {'image': uint8 [N, H, W, 3]}.
    gan: the static model.

  Returns:
    Per-example float32 metrics [N]: g_loss, g_adversarial, g_l1, d_loss, d_real,
    d_fake, d_real_prob, d_fake_prob (mean patch probabilities; d_fake_prob is
    D's realism score of the colorization) and ab_mae (mean |ab error| in ab units).
  """
  l_norm, real_ab = color.rgb_to_model_inputs(batch['image'])
  fake_ab = generate_ab(gan, state.generator, l_norm)
  real_logits = realism_logits(gan, state.discriminator, l_norm, real_ab)
  fake_logits = realism_logits(gan, state.discriminator, l_norm, fake_ab)
  g_parts = losses.generator_loss(fake_logits, fake_ab, real_ab, gan.l1_weight)
  d_parts = losses.discriminator_loss(real_logits, fake_logits, gan.real_label, gan.d_loss_scale)

  return {
      'g_loss': g_parts['total'],
      'g_adversarial': g_parts['adversarial'],
      'g_l1': g_parts['l1'],
      'd_loss': d_parts['total'],
      'd_real': d_parts['real'],
      'd_fake': d_parts['fake'],
      'd_real_prob': realism_score(real_logits),
      'd_fake_prob': realism_score(fake_logits),
      'ab_mae': g_parts['l1'] * color.AB_RANGE,
  }


def jit(fun: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
  """`jax.jit` plus, on the CPU backend, the XLA options the conv plans assume.

  See `layers.XLA_CPU_OPTIONS`: without them the 'fast' plans run convolutions on
  YNNPACK and a train step took 1.6-2.3x as long (128x128, batch 16, width 32).
  Options the caller or $XLA_FLAGS set win. Every program that runs the networks
  is compiled with this.
  """
  if jax.default_backend() == 'cpu':
    options = {**layers.xla_cpu_compiler_options(os.environ.get('XLA_FLAGS', '')),
               **jit_kwargs.get('compiler_options', {})}
    if options:
      jit_kwargs = {**jit_kwargs, 'compiler_options': options}
  return jax.jit(fun, **jit_kwargs)


def compile_train_step(gan: GAN, **jit_kwargs) -> Callable[[GANState, Batch],
                                                           tuple[GANState, Metrics]]:
  """`train_step` jit-compiled for `gan`, with the state's buffers donated."""
  return jit(functools.partial(train_step, gan=gan), donate_argnums=0, **jit_kwargs)


def compile_eval_step(gan: GAN, **jit_kwargs) -> Callable[[GANState, Batch], Metrics]:
  """`eval_step` jit-compiled for `gan`."""
  return jit(functools.partial(eval_step, gan=gan), **jit_kwargs)
