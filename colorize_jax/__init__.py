"""colorize_jax: black-and-white photo colorization with a conditional GAN in JAX/Flax."""
