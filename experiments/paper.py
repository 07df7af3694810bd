"""Every setting of Petre & Trausan-Matu (2020), with the section it comes from.

  python launch.py train --config experiments/paper.py --workdir runs/paper

The paper's full protocol (4 runs x 20 epochs, then selection by Inception Score)
is experiments/paper_protocol.sh.
"""

from experiments import default


def get_config():
  config = default.get_config()
  # sec. 3, data: Places365 (TFDS places365_small), "nature" = the outdoor-natural
  # scenes of the scene hierarchy; 15,000 training and 3,000 validation images.
  config.data.source = 'places365_nature'
  config.data.num_train = 15_000
  config.data.num_val = 3_000
  config.data.samples_per_epoch = None     # sec. 3: each epoch one pass, shuffled
  config.image_size = 256                  # sec. 3: L of a 256x256 image
  config.num_epochs = 20                   # sec. 3: 20 epochs, a model saved every epoch
  config.keep_checkpoints = None           # sec. 3 saves every epoch's model; sec. 4 ranks them
  # sec. 3, model: U-Net generator, PatchGAN discriminator with 34x34 patches.
  config.model.disc_layers = 2
  # sec. 3, losses: adversarial + mean absolute difference (pix2pix's lambda = 100;
  # the paper gives no value), label smoothing 1 -> 0.9 for real patches.
  config.loss.l1_weight = 100.0
  config.loss.real_label = 0.9
  config.loss.d_loss_scale = 1.0           # sec. 3: D's loss is the BCE, not pix2pix's half
  # sec. 3: Adam for both nets with different learning rates (values not given).
  config.optim.g_learning_rate = 2e-4
  config.optim.d_learning_rate = 1e-4
  return config
