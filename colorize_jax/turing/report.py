"""Turing-test results: numbers (dict), an HTML page and a CSV of all answers.

Counting rules (also printed on the page):
  * An answer counts once it is stored; a page that was shown but not answered
    is not an answer.
  * The headline fool rate and the per-pair rates use only participants who
    answered every pair (as in the paper: each participant saw all pairs).
    Partial participants are listed per participant, and their answers are
    included in a second, "all answers" rate for reference.
  * 95% intervals are Wilson score intervals that treat answers as independent
    trials (they ignore that answers cluster by participant and by pair).
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any

import jinja2
from PIL import Image

from colorize_jax.turing import stats
from colorize_jax.turing import store as store_lib
from colorize_jax.turing import study as study_lib

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / 'templates'
STATIC_DIR = PACKAGE_DIR / 'static'
CSV_NAME = 'answers.csv'
HTML_NAME = 'results.html'
PARTIAL_POLICY = (
    'The headline fool rate and the per-pair rates count only participants who '
    'answered every pair; partial participants are listed below and included '
    'only in the "all answers" rate.')
CSV_FIELDS = (
    'answer_id', 'participant', 'participant_completed', 'age_range', 'field_of_study',
    'position', 'pair_id', 'photo_id', 'left_image', 'right_image', 'real_side',
    'chosen_side', 'chosen_image', 'fooled', 'answered_at')


def _pct(rate: float | None) -> str:
  return '-' if rate is None else f'{100 * rate:.1f}%'


@functools.cache
def templates_env() -> jinja2.Environment:
  """The Jinja2 environment of the study's pages (autoescaping on; shared, so each
  template is compiled once)."""
  env = jinja2.Environment(
      loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
      autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
      undefined=jinja2.StrictUndefined,
      trim_blocks=True, lstrip_blocks=True)
  env.filters['pct'] = _pct
  return env


def participant_label(participant_id: int) -> str:
  """How a participant is named in reports: 'p<id>' (never their cookie token)."""
  return f'p{participant_id}'


def build_report(study: study_lib.Study, store: store_lib.Store) -> dict[str, Any]:
  """Computes the study's results.

  Args:
    study: the study.
    store: its responses database.

  Returns:
    A JSON-serialisable dict: 'overall' and 'overall_all_answers' ({'fooled',
    'answers', 'rate' in [0, 1] or None, 'ci95': [low, high]}), 'per_pair'
    (highest fool rate first; each with 'pair_id', 'photo_id', 'real_image',
    'generated_image' and the same counts), 'per_participant' ('participant',
    'age_range', 'field_of_study', 'answered', 'fooled', 'completed'),
    'participants' (counts 'total', 'completed', 'partial', 'not_started'),
    'reference' (paper 0.23, Zhang et al. 0.32, chance 0.5), 'partial_policy'.
  """
  answers = store.answers()
  listed = {p.pair_id for p in study.pairs}
  unlisted = sorted({a.pair_id for a in answers} - listed)
  if unlisted:
    raise study_lib.StudyError(
        f'{study.db_path} holds answers to {len(unlisted)} pair(s) that {study_lib.MANIFEST} '
        f'does not list (e.g. {unlisted[0]}): was the manifest edited? Restore it (answers '
        'are only meaningful against the pairs they were given for).')
  summary = stats.summarize(
      (stats.Answer(a.participant_id, a.pair_id, a.fooled) for a in answers),
      [p.pair_id for p in study.pairs])
  completed = {s.participant for s in summary.per_participant if s.completed}
  per_pair = []
  for s in summary.per_pair:
    pair = study.pair(s.pair_id)
    per_pair.append({'pair_id': pair.pair_id, 'photo_id': pair.photo_id,
                     'real_image': pair.real_image, 'generated_image': pair.generated_image,
                     **s.proportion.as_dict()})
  per_participant = []
  for p in store.participants():
    per_participant.append({
        'participant': participant_label(p.participant_id), 'age_range': p.age_range,
        'field_of_study': p.field_of_study, 'answered': p.answered, 'fooled': p.fooled,
        'completed': p.participant_id in completed})
  num_started = sum(p['answered'] > 0 for p in per_participant)
  return {
      'study_id': study.study_id,
      'created_at': study.created_at,
      'num_pairs': study.num_pairs,
      'about': dict(study.about or {}),   # the run, step, photos and size it tests
      'participants': {
          'total': len(per_participant),
          'completed': len(completed),
          'partial': num_started - len(completed),
          'not_started': len(per_participant) - num_started,
      },
      'overall': summary.overall.as_dict(),
      'overall_all_answers': summary.overall_all_answers.as_dict(),
      'per_pair': per_pair,
      'per_participant': per_participant,
      'reference': {'paper': stats.PAPER_FOOL_RATE, 'zhang_et_al_2016': stats.ZHANG_FOOL_RATE,
                    'indistinguishable': 0.5},
      'partial_policy': PARTIAL_POLICY,
  }


# A formula's first character at the start of a text or of a ';'-separated part of it
# (a spreadsheet whose list separator is ';', as in many locales, splits a line there).
_FORMULA_START = re.compile(r'(^|;)(\s*)([=+\-@\t\r])')


def _csv_safe(value: object) -> object:
  # Free text typed by participants must not run as a formula in a spreadsheet: each
  # place a cell could start with one gets a ' in front, as spreadsheets read it (text).
  if isinstance(value, str):
    return _FORMULA_START.sub(lambda m: m.group(1) + m.group(2) + "'" + m.group(3), value)
  return value


def answers_csv(study: study_lib.Study, store: store_lib.Store) -> str:
  """All stored answers as CSV text (header `CSV_FIELDS`, one row per answer)."""
  rows = store.answers()
  counts: dict[int, int] = {}
  for a in rows:
    counts[a.participant_id] = counts.get(a.participant_id, 0) + 1
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(CSV_FIELDS)
  for a in rows:
    pair = study.pair(a.pair_id)
    writer.writerow([_csv_safe(v) for v in (
        a.answer_id, participant_label(a.participant_id),
        int(counts[a.participant_id] == study.num_pairs), a.age_range, a.field_of_study,
        a.position + 1, a.pair_id, pair.photo_id, a.left_image, a.right_image,
        'left' if a.left_image == pair.real_image else 'right',
        a.chosen_side, a.chosen_image, int(a.fooled), a.answered_at)])
  return out.getvalue()


def render_results_html(data: dict[str, Any], img_src: Callable[[str], str], *,
                        csv_href: str | None, prefix: str = '',
                        inline_css: str | None = None) -> str:
  """Renders the results page.

  Args:
    data: `build_report`'s dict.
    img_src: maps an image file name to the URL or data URI to show it with.
    csv_href: link to the CSV export, or None.
    prefix: URL prefix of the server's static files ('' at the root).
    inline_css: CSS to embed (for a self-contained file) instead of linking it.

  Returns:
    The HTML page.
  """
  return templates_env().get_template('results.html').render(
      r=data, img_src=img_src, csv_href=csv_href, prefix=prefix, inline_css=inline_css)


def _thumbnail_data_uri(path: pathlib.Path, size: int = 128) -> str:
  with Image.open(path) as img:
    img = img.convert('RGB')
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format='PNG')
  return 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode('ascii')


def report(study_dir: str | os.PathLike[str]) -> dict[str, Any]:
  """Returns the results of the study in `study_dir` (see `build_report`)."""
  study = study_lib.load_study(study_dir)
  return build_report(study, store_lib.Store(study))


def write_report(study_dir: str | os.PathLike[str],
                 out_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
  """Writes results.html (self-contained, with thumbnails) and answers.csv.

  Args:
    study_dir: the study folder.
    out_dir: where to write; default `<study_dir>/report`.

  Returns:
    `build_report`'s dict plus 'files': {'html': path, 'csv': path}.

  Raises:
    study_lib.StudyError: no readable study in `study_dir`.
  """
  study = study_lib.load_study(study_dir)
  store = store_lib.Store(study)
  data = build_report(study, store)
  out = pathlib.Path(out_dir) if out_dir is not None else study.study_dir / study_lib.REPORT_DIR
  out.mkdir(parents=True, exist_ok=True)
  csv_path = out / CSV_NAME
  csv_path.write_text(answers_csv(study, store), encoding='utf-8')
  thumbs = {name: _thumbnail_data_uri(study.images_dir / name)
            for name in sorted(study.image_names())}
  html = render_results_html(data, thumbs.__getitem__, csv_href=CSV_NAME,
                             inline_css=(STATIC_DIR / 'style.css').read_text())
  html_path = out / HTML_NAME
  html_path.write_text(html, encoding='utf-8')
  return {**data, 'files': {'html': str(html_path), 'csv': str(csv_path)}}
