"""Petre & Trausan-Matu (2020): the default config, which holds every setting the paper
gives, each with the section it comes from (experiments/default.py).

  python launch.py train --config experiments/paper.py --workdir runs/paper

The paper's full protocol (4 runs x 20 epochs, then selection by Inception Score)
is experiments/paper_protocol.sh.
"""

from experiments import default


def get_config():
  return default.get_config()
