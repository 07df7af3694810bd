"""Runs the PyTorch peer (../shared/bench/bench_torch.py) on the GPU, unchanged.

  python experiments/torch_peer_on_gpu.py BENCH_DIR --size 256 --batch 16 --width 64 ...

The peer builds its modules and random batch with PyTorch's factory functions, so making
CUDA the default device puts the same model, optimizers, train step and timing loop on
the GPU (its `.item()` / `float()` at the end of each step wait for the GPU). cuDNN's
autotuner is on, as a PyTorch user after speed would have it; convolutions may use TF32
(PyTorch's default), as XLA's do. Prints the peer's one-line JSON result.
"""

import runpy
import sys

import torch


def main(argv: list[str]) -> None:
  bench_dir, flags = argv[0], argv[1:]
  if not torch.cuda.is_available():
    raise SystemExit('torch_peer_on_gpu: PyTorch sees no CUDA device')
  torch.set_default_device('cuda')
  torch.backends.cudnn.benchmark = True
  sys.path.insert(0, bench_dir)
  sys.argv = [f'{bench_dir}/bench_torch.py', *flags]
  runpy.run_path(sys.argv[0], run_name='__main__')


if __name__ == '__main__':
  main(sys.argv[1:])
