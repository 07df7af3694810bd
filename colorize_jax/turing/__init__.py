"""Human Turing test of the colorizer (paper sec. 4): build a study, serve it, report.

  study = build_study(photos, colorize, 'runs/turing', num_pairs=20, seed=0)
  serve('runs/turing', port=8000)          # prints the participant and results URLs
  numbers = write_report('runs/turing')    # runs/turing/report/{results.html,answers.csv}

`serve`, `create_app`, `report` and `write_report` are imported on first use, so
that building a study needs neither the web stack nor Jinja2.
"""

from colorize_jax.turing.stats import wilson_interval
from colorize_jax.turing.study import (Pair, Study, StudyError, build_study, holds_study,
                                       load_study, select_photos)

_LAZY = {
    'serve': 'colorize_jax.turing.server',
    'create_app': 'colorize_jax.turing.server',
    'report': 'colorize_jax.turing.report',
    'write_report': 'colorize_jax.turing.report',
}

__all__ = ['Pair', 'Study', 'StudyError', 'build_study', 'holds_study', 'load_study',
           'select_photos', 'wilson_interval', *_LAZY]


def __getattr__(name: str):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
