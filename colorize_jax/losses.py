"""GAN losses of the paper (sec. 3), on logits, per example.

Every function returns per-example values of shape [N] (means over the patch map
or the pixels) so that a training step can average them and an evaluation can
mask padded examples out.
"""

import jax.numpy as jnp
import optax


def adversarial_loss(logits: jnp.ndarray, target: float) -> jnp.ndarray:
  """Binary cross-entropy of PatchGAN logits against a constant label.

  Args:
    logits: [N, h, w, 1] raw discriminator outputs (any real value).
    target: the label every patch is compared with, in [0, 1] (1 real, 0 fake,
      0.9 for one-sided label smoothing).

  Returns:
    [N] mean over each example's patches, in nats (log 2 = 0.693 at logit 0).
  """
  # optax's form max(x, 0) - x t + log(1 + exp(-|x|)) is stable for any logit.
  per_patch = optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target))
  return per_patch.reshape(per_patch.shape[0], -1).mean(axis=1)


def l1_loss(fake_ab: jnp.ndarray, real_ab: jnp.ndarray) -> jnp.ndarray:
  """Mean absolute difference per example of ab [N, H, W, 2] (any consistent scale) -> [N]."""
  diff = jnp.abs(fake_ab - real_ab)
  return diff.reshape(diff.shape[0], -1).mean(axis=1)


def generator_loss(fake_logits: jnp.ndarray, fake_ab: jnp.ndarray, real_ab: jnp.ndarray,
                   l1_weight: float) -> dict[str, jnp.ndarray]:
  """The generator's loss: BCE(D(L, G(L)), 1) + l1_weight * mean |G(L) - ab|.

  Args:
    fake_logits: [N, h, w, 1] D's logits on the generated colours.
    fake_ab, real_ab: [N, H, W, 2] normalised ab in [-1, 1] (pix2pix's scale, so
      that l1_weight = 100 means what it means in pix2pix).
    l1_weight: lambda of the L1 term.

  Returns:
    {'total', 'adversarial', 'l1'}: each [N].
  """
  adversarial = adversarial_loss(fake_logits, 1.0)
  l1 = l1_loss(fake_ab, real_ab)
  return {'total': adversarial + l1_weight * l1, 'adversarial': adversarial, 'l1': l1}


def discriminator_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray, real_label: float,
                       scale: float = 1.0) -> dict[str, jnp.ndarray]:
  """The discriminator's loss: scale * (BCE(D(real), real_label) + BCE(D(fake), 0)).

  Args:
    real_logits, fake_logits: [N, h, w, 1] D's logits on real and generated ab
      (the generated ab must be held constant by the caller).
    real_label: target for real patches: 0.9 is the paper's one-sided label
      smoothing (fake patches keep target 0).
    scale: overall factor (pix2pix uses 0.5 to slow D down relative to G).

  Returns:
    {'total', 'real', 'fake'}: each [N]; 'real' and 'fake' are unscaled.
  """
  real = adversarial_loss(real_logits, real_label)
  fake = adversarial_loss(fake_logits, 0.0)
  return {'total': scale * (real + fake), 'real': real, 'fake': fake}
