"""The two networks: a U-Net generator (L -> ab) and a PatchGAN discriminator (L, ab -> logits).

Architecture of pix2pix (Isola et al. 2017) as the paper uses it (sec. 3) and as
the TensorFlow pix2pix tutorial writes it; layer for layer the network that
`../shared/bench` times in PyTorch and Keras:

  Generator, size 2^n: n encoder blocks Conv4x4/s2 -> norm (not on the first) ->
  LeakyReLU(0.2), widths 64, 128, 256, 512, 512, ... (x width/64); n - 1 decoder
  blocks ConvT4x4/s2 -> norm -> dropout (innermost levels) -> ReLU -> concat with
  the mirrored encoder output; a last ConvT4x4/s2 to 2 channels -> tanh.

  Discriminator with k strided layers: Conv4x4/s2 (no norm) -> LeakyReLU, k - 1 x
  [Conv4x4/s2 -> norm -> LeakyReLU], Conv4x4/s1 -> norm -> LeakyReLU, Conv4x4/s1 to
  one logit per patch. k = 2 gives the paper's 34x34 receptive field, k = 3
  pix2pix's 70x70.

Both take and return normalised values: L and ab in [-1, 1] (see `color`).
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from colorize_jax import layers

NORMS = ('batch', 'instance', 'none')
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512

# PyTorch's BatchNorm defaults (momentum 0.1 there is 1 - momentum here), as pix2pix.
_BN_MOMENTUM = 0.9
_NORM_EPSILON = 1e-5


def unet_depth(image_size: int) -> int:
  """Number of stride-2 encoder levels for a square image: log2(size), bottleneck 1x1.

  Raises:
    ValueError: unless image_size is a power of two in [32, 512].
  """
  depth = int(round(math.log2(image_size))) if image_size > 0 else 0
  if 2 ** depth != image_size or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
    raise ValueError(
        f'image_size must be a power of two from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} '
        f'(the U-Net halves it down to 1x1), got {image_size}')
  return depth


def encoder_widths(depth: int, width: int = 64) -> list[int]:
  """Output channels of the `depth` encoder levels: width * 2^i, capped at 8 * width."""
  return [min(width * 2 ** i, 8 * width) for i in range(depth)]


def _check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise ValueError(f'norm must be one of {NORMS}, got {norm!r}')


class Norm(nn.Module):
  """Batch, instance or no normalisation over the channels of [N, H, W, C]."""
  kind: str
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    _check_norm(self.kind)
    if self.kind == 'batch':
      return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM,
                          epsilon=_NORM_EPSILON, dtype=self.dtype)(x)
    # Instance statistics of a 1x1 map are its own value: the output would be 0.
    if self.kind == 'instance' and x.shape[1] * x.shape[2] > 1:
      return nn.InstanceNorm(epsilon=_NORM_EPSILON, dtype=self.dtype)(x)
    return x


class Generator(nn.Module):
  """U-Net generator: normalised L [N, S, S, 1] -> normalised ab [N, S, S, 2] in (-1, 1).

  Attributes:
    width: channels of the first encoder level (pix2pix's ngf, 64).
    norm: 'batch' | 'instance' | 'none'.
    dropout: dropout rate on the innermost `num_dropout_levels` decoder levels.
    num_dropout_levels: how many decoder levels (from the bottleneck out) drop out.
    conv_impl: 'fast' | 'plain', see `layers`.
    dtype: computation dtype (e.g. jnp.bfloat16); parameters stay float32.
    depth: encoder levels; None: log2 of the input size (a 1x1 bottleneck). A net
      built for one size (depth fixed) also runs on any multiple of 2^depth, e.g.
      to colorize at a higher resolution than it was trained at.
  """
  width: int = 64
  norm: str = 'batch'
  dropout: float = 0.5
  num_dropout_levels: int = 3
  conv_impl: str = 'fast'
  dtype: Any = None
  depth: int | None = None

  @nn.compact
  def __call__(self, l_norm: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    n, height, width, channels = l_norm.shape
    if height != width or channels != 1:
      raise ValueError(f'Generator expects [N, S, S, 1] with S a power of two, got {l_norm.shape}')
    depth = unet_depth(height) if self.depth is None else self.depth
    if height % 2 ** depth:
      raise ValueError(f'This generator has {depth} levels: its input size must be a multiple '
                       f'of {2 ** depth}, got {height}')
    widths = encoder_widths(depth, self.width)
    # A norm makes a preceding bias redundant.
    biased = self.norm == 'none'

    x, skips = l_norm, []
    for level, features in enumerate(widths):
      x = layers.Conv4x4S2(features, use_bias=level == 0 or biased, impl=self.conv_impl,
                           dtype=self.dtype, name=f'down{level}')(x)
      if level > 0:
        x = Norm(self.norm, self.dtype, name=f'down{level}_norm')(x, train)
      x = nn.leaky_relu(x, 0.2)
      skips.append(x)

    skips.pop()  # the bottleneck feeds the decoder directly
    for level, features in enumerate(reversed(widths[:-1])):
      x = layers.ConvTranspose4x4S2(features, use_bias=biased, impl=self.conv_impl,
                                    dtype=self.dtype, name=f'up{level}')(x)
      x = Norm(self.norm, self.dtype, name=f'up{level}_norm')(x, train)
      if level < self.num_dropout_levels and self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(x)
      x = jnp.concatenate([x, skips.pop()], axis=-1)

    x = layers.ConvTranspose4x4S2(2, use_bias=True, impl=self.conv_impl, dtype=self.dtype,
                                  name='to_ab')(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """PatchGAN conditioned on L: (L [N, H, W, 1], ab [N, H, W, 2]) -> logits [N, h, w, 1].

  Each logit judges one overlapping patch (34x34 with the default 2 strided layers;
  see `receptive_field`). Inputs are normalised to [-1, 1].
  """
  width: int = 64
  num_layers: int = 2
  norm: str = 'batch'
  conv_impl: str = 'fast'
  dtype: Any = None

  @nn.compact
  def __call__(self, l_norm: jnp.ndarray, ab_norm: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if self.num_layers < 1:
      raise ValueError(f'disc_layers must be >= 1, got {self.num_layers}')
    biased = self.norm == 'none'
    x = jnp.concatenate([l_norm, ab_norm.astype(l_norm.dtype)], axis=-1)
    for level in range(self.num_layers):
      features = self.width * min(2 ** level, 8)
      x = layers.Conv4x4S2(features, use_bias=level == 0 or biased, impl=self.conv_impl,
                           dtype=self.dtype, name=f'conv{level}')(x)
      if level > 0:
        x = Norm(self.norm, self.dtype, name=f'conv{level}_norm')(x, train)
      x = nn.leaky_relu(x, 0.2)
    x = layers.Conv4x4S1(self.width * min(2 ** self.num_layers, 8), use_bias=biased,
                         impl=self.conv_impl, dtype=self.dtype, name=f'conv{self.num_layers}')(x)
    x = Norm(self.norm, self.dtype, name=f'conv{self.num_layers}_norm')(x, train)
    x = nn.leaky_relu(x, 0.2)
    x = layers.Conv4x4S1(1, use_bias=True, impl=self.conv_impl, dtype=self.dtype,
                         name='logits')(x)
    return x.astype(jnp.float32)


def receptive_field(num_layers: int) -> int:
  """Side in pixels of the input patch one PatchGAN logit sees (34 for 2 layers, 70 for 3)."""
  rf = 1
  for stride in reversed([2] * num_layers + [1, 1]):
    rf = rf * stride + (4 - stride)
  return rf


def discriminator_output_size(image_size: int, num_layers: int) -> int:
  """Side of the PatchGAN's logit map for a square input (62 for 256 and 2 layers)."""
  size = image_size
  for _ in range(num_layers):
    size //= 2
  return size - 2


def init_variables(module: nn.Module, rng: jnp.ndarray, *inputs: jnp.ndarray) -> dict[str, Any]:
  """Initialises `module`'s variables ({'params', 'batch_stats'?}) for example inputs.

  Compiled as one program. XLA's CPU compiler takes ~10x longer on the
  partitionable threefry of dozens of initialisers (a minute for a tiny U-Net);
  initial parameters are replicated, so that variant buys nothing here.
  """
  with jax.threefry_partitionable(False):
    return jax.jit(functools.partial(module.init, train=False))(rng, *inputs)


def make_models(model_config, dtype: Any = None,
                image_size: int | None = None) -> tuple[Generator, Discriminator]:
  """Builds (generator, discriminator) from `config.model` (see experiments/default.py).

  With `image_size`, the generator's depth is fixed to that size's (log2), so that
  it can later run at other sizes too.
  """
  _check_norm(model_config.norm)
  layers._check_impl(model_config.conv_impl)
  if not 0.0 <= model_config.dropout < 1.0:
    raise ValueError(f'model.dropout must be in [0, 1), got {model_config.dropout}')
  if model_config.width < 1:
    raise ValueError(f'model.width must be >= 1, got {model_config.width}')
  if model_config.num_dropout_levels < 0:
    raise ValueError(f'model.num_dropout_levels must be >= 0, got '
                     f'{model_config.num_dropout_levels}')
  if model_config.disc_layers < 1:
    raise ValueError(f'model.disc_layers must be >= 1, got {model_config.disc_layers}')
  depth = None if image_size is None else unet_depth(image_size)   # checks image_size first
  if image_size is not None and discriminator_output_size(
      image_size, model_config.disc_layers) < 1:
    deepest = max((n for n in range(1, 12) if discriminator_output_size(image_size, n) >= 1),
                  default=0)
    raise ValueError(f'model.disc_layers={model_config.disc_layers} is too deep for '
                     f'image_size {image_size}: the PatchGAN would have no logits left; at '
                     f'most {deepest} at this size.')
  generator = Generator(width=model_config.width, norm=model_config.norm,
                        dropout=model_config.dropout,
                        num_dropout_levels=model_config.num_dropout_levels,
                        conv_impl=model_config.conv_impl, dtype=dtype,
                        depth=depth)
  discriminator = Discriminator(width=model_config.width, num_layers=model_config.disc_layers,
                                norm=model_config.norm, conv_impl=model_config.conv_impl,
                                dtype=dtype)
  return generator, discriminator
