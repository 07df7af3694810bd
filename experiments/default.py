"""Default configuration: the paper's settings where it gives them, pix2pix's elsewhere.

Petre & Trausan-Matu (2020), "Automatic black and white image colorization using
generative adversarial networks" (../shared/docs/paper.md); section numbers below
refer to that paper.

  python launch.py train --config experiments/default.py --workdir runs/default
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config; variants start from it and change a few fields."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.image_size = 256            # sec. 3: the generator reads L of 256x256 images
  config.batch_size = 16             # global batch, split over all devices; the paper gives
                                     # none (pix2pix: 1): ours, for BatchNorm and throughput
  config.num_epochs = 20             # sec. 3: 20 epochs, a model saved every epoch

  config.data = ml_collections.ConfigDict()
  config.data.source = 'places365_nature'  # sec. 3: Places365, "nature" scenes
  config.data.tfds_data_dir = ml_collections.FieldReference(None, field_type=str)
  config.data.folder = ml_collections.FieldReference(None, field_type=str)
  config.data.num_train = 15_000     # sec. 3
  config.data.num_val = 3_000        # sec. 3
  config.data.val_fraction = 0.1     # `folder` without train/ and val/ subfolders
  # The paper names no augmentation: no crops by default (pix2pix's jitter, resize to
  # 286 and crop, differs); mirroring (pix2pix's) keeps every photo's colours plausible.
  config.data.random_resized_crop = False
  config.data.crop_scale = (0.5, 1.0)
  config.data.flip = True
  # Examples per training epoch; None: one pass over the training images. Sources
  # with a handful of photos (`samples`) visit each many times, with new crops.
  config.data.samples_per_epoch = ml_collections.FieldReference(None, field_type=int)
  # Places365 class names to keep; None: the outdoor-natural list in input_pipeline.
  config.data.places_classes = ml_collections.FieldReference(None, field_type=tuple)
  config.data.prefetch = 2

  config.model = ml_collections.ConfigDict()
  config.model.width = 64            # pix2pix ngf / ndf
  config.model.norm = 'batch'        # 'batch' | 'instance' | 'none'
  config.model.dropout = 0.5         # pix2pix: on the innermost decoder levels
  config.model.num_dropout_levels = 3
  config.model.disc_layers = 2       # sec. 3: 2 strided layers -> 34x34 receptive field
  config.model.conv_impl = 'fast'    # 'fast' (per-layer CPU plans, layers.py) | 'plain' (lax convs)
  config.model.compute_dtype = 'float32'  # 'bfloat16': mixed precision, params stay float32

  config.loss = ml_collections.ConfigDict()
  config.loss.l1_weight = 100.0      # pix2pix lambda
  config.loss.real_label = 0.9       # sec. 3: one-sided label smoothing
  # sec. 3: D's loss is the BCE; pix2pix halves it (0.5). D has its own Adam, which
  # divides by the gradients' running magnitude: a step's updates change only through
  # Adam's eps, like a rounding difference (tests/test_steps.py); the logged d_loss halves.
  config.loss.d_loss_scale = 1.0

  config.optim = ml_collections.ConfigDict()
  # sec. 3: Adam for both nets with different learning rates (values not given; the
  # paper cites Salimans et al. 2016 for differing rates, not for which is larger):
  # pix2pix's 2e-4 / beta1 0.5 for G; D at half G's rate (our choice), so that D,
  # which wins early on colorization, does not starve G of gradient.
  config.optim.g_learning_rate = 2e-4
  config.optim.g_b1 = 0.5
  config.optim.g_b2 = 0.999
  config.optim.d_learning_rate = 1e-4
  config.optim.d_b1 = 0.5
  config.optim.d_b2 = 0.999

  # None: every device of every process; the global batch is split over them.
  config.num_devices = ml_collections.FieldReference(None, field_type=int)
  config.log_every_steps = 50
  config.num_sample_images = 8       # validation images colorized into a grid each epoch
  # None: every epoch's checkpoint; N: the latest N epochs'. A checkpoint saved on an
  # interruption only serves to resume: it goes once a later epoch's is on disk.
  config.keep_checkpoints = ml_collections.FieldReference(None, field_type=int)
  return config
