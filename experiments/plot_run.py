"""Plots a run's loss curves and validation metrics (against the gray baseline) to a PNG.

  pip install -e '.[plots]'     # matplotlib
  python experiments/plot_run.py runs/photos_cpu experiments/results/photos_cpu_curves.png

Reads the TensorBoard event files `launch.py train` writes into the workdir and
prints every validation series (step: value) after saving the figure.
"""

import collections
import os
import sys

import numpy as np
import tensorflow as tf

# (tag, title) of the top row: the training losses, per logged step.
TRAIN_PANELS = (('train/g_l1', 'generator L1 (normalised ab)'),
                ('train/g_adversarial', 'generator adversarial'),
                ('train/d_loss', 'discriminator loss'))
# (model tag, gray-baseline tag, title) of the bottom row, per epoch.
VAL_PANELS = (('val/psnr', 'val/gray_psnr', 'val PSNR, dB (higher is better)'),
              ('val/ab_mae', 'val/gray_ab_mae', 'val mean |ab error| (lower is better)'),
              ('val/auc', 'val/gray_auc', 'val AuC of the ab-error curve (higher is better)'),
              ('val/cf', None, 'val colourfulness (gray = 0)'))


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Every scalar in the workdir's event files: tag -> (steps int64 [T], values float64 [T]).

  Steps are sorted; a step written twice (a resumed run repeats no step, but a
  restarted one may) keeps its last value. An event file cut short (a killed run, a
  full disk) gives what it holds up to the cut, with a warning.

  Raises:
    FileNotFoundError: no event files in workdir.
  """
  series = collections.defaultdict(dict)
  files = sorted(tf.io.gfile.glob(os.path.join(workdir, 'events.out.tfevents.*')))
  if not files:
    raise FileNotFoundError(f'no TensorBoard event files in {workdir!r}')
  for path in files:
    try:
      for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
          if value.HasField('simple_value'):
            series[value.tag][event.step] = value.simple_value
          elif value.HasField('tensor') and not value.tensor.tensor_shape.dim:
            series[value.tag][event.step] = float(tf.make_ndarray(value.tensor))
    except tf.errors.DataLossError as e:
      print(f'warning: {path} is cut short ({e.message.strip()}); plotting what it holds',
            file=sys.stderr)
  return {tag: (np.array(sorted(points), np.int64),
                np.array([points[s] for s in sorted(points)], np.float64))
          for tag, points in series.items()}


def plot(series: dict[str, tuple[np.ndarray, np.ndarray]], out_path: str) -> None:
  """Saves the 2x4 figure: training losses and D's mean probabilities on top; the
  validation metrics of the model and of the gray (ab = 0) baseline below."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  empty = (np.zeros(0), np.zeros(0))
  fig, axes = plt.subplots(2, 4, figsize=(20, 8))
  for ax, (tag, title) in zip(axes[0], TRAIN_PANELS):
    ax.plot(*series.get(tag, empty))
    ax.set_title(title)
    ax.set_xlabel('step')
  axes[0, 3].plot(*series.get('train/d_real_prob', empty), label='D(real)')
  axes[0, 3].plot(*series.get('train/d_fake_prob', empty), label='D(generated)')
  axes[0, 3].set_title('discriminator mean probability')
  axes[0, 3].set_xlabel('step')
  axes[0, 3].legend()
  for ax, (tag, gray_tag, title) in zip(axes[1], VAL_PANELS):
    ax.plot(*series.get(tag, empty), 'o-', label='model')
    if gray_tag:
      ax.plot(*series.get(gray_tag, empty), 's--', label='gray (ab = 0)')
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.legend()
  for ax in axes.flat:
    ax.grid(alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  fig.savefig(out_path, dpi=80)
  plt.close(fig)


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print(__doc__, file=sys.stderr)
    return 2
  try:
    series = read_scalars(argv[1])
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if not series:
    print(f'warning: the event files in {argv[1]!r} hold no scalars yet', file=sys.stderr)
  plot(series, argv[2])
  for tag in sorted(t for t in series if t.startswith('val/')):
    steps, values = series[tag]
    print(tag, ' '.join(f'{s}:{v:.4g}' for s, v in zip(steps, values)))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
