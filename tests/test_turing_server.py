"""Tests of the Turing-test web app and report (colorize_jax.turing.server / report).

Starlette's TestClient re-raises any exception that would be a 500, so every test
here also checks that the request did not crash the app.
"""

import contextlib
import csv
import io
import random
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest

pytest.importorskip('starlette')
pytest.importorskip('jinja2')
pytest.importorskip('python_multipart')

from starlette.testclient import TestClient  # noqa: E402

from colorize_jax.turing import report as report_lib  # noqa: E402
from colorize_jax.turing import server  # noqa: E402
from colorize_jax.turing import store as store_lib  # noqa: E402
from colorize_jax.turing import study as study_lib  # noqa: E402

NUM_PAIRS = 5
TOKEN = 'results-secret'
BUTTON_RE = re.compile(
    r'<button type="submit" name="choice" value="([0-9a-f]{32}\.png)" class="choice" '
    r'id="choice-(left|right)">.*?</button>', re.S)


def make_photos(n, size=32, seed=0):
  rng = np.random.default_rng(seed)
  return [(f'photo_{i:03d}', rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
          for i in range(n)]


def hue_shift(rgb):
  return np.ascontiguousarray(rgb[..., [1, 2, 0]])


@pytest.fixture
def study_dir(tmp_path):
  out = tmp_path / 'study'
  study_lib.build_study(make_photos(8), hue_shift, out, num_pairs=NUM_PAIRS, seed=0)
  return out


@pytest.fixture
def app(study_dir):
  return server.create_app(study_dir, results_token=TOKEN)


def cookie_name(app):
  return server.participant_cookie(app.state.study)


def new_client(app, cookie=None):
  client = TestClient(app)
  if cookie is not None:
    client.cookies.set(cookie_name(app), cookie)
  return client


def start(client, **fields):
  response = client.post('/start', data=fields, follow_redirects=False)
  assert response.status_code == 303, response.text
  return response


def current(client):
  """The participant's current pair page, parsed."""
  response = client.get('/study', follow_redirects=False)
  assert response.status_code == 200, (response.status_code, response.text)
  html = response.text
  number, total = map(int, re.search(r'Pair (\d+) of (\d+)', html).groups())
  buttons = BUTTON_RE.findall(html)
  assert [side for _, side in buttons] == ['left', 'right']
  return {'html': html, 'number': number, 'total': total,
          'pair_id': re.search(r'name="pair_id" value="([0-9a-f]{16})"', html).group(1),
          'left': buttons[0][0], 'right': buttons[1][0],
          'buttons': [m.group(0) for m in BUTTON_RE.finditer(html)]}


def answer(client, pair_id, choice):
  return client.post('/answer', data={'pair_id': pair_id, 'choice': choice},
                     follow_redirects=False)


def count_answers(study_dir):
  with sqlite3.connect(study_dir / study_lib.RESPONSES_DB) as conn:
    return conn.execute('SELECT COUNT(*) FROM answers').fetchone()[0]


def complete(client, side='left', limit=None):
  """Answers the remaining pairs (or `limit` of them) always picking `side`."""
  while limit is None or limit > 0:
    response = client.get('/study', follow_redirects=False)
    if response.status_code == 303:
      return
    page = current(client)
    assert answer(client, page['pair_id'], page[side]).status_code == 303
    limit = None if limit is None else limit - 1


def test_full_flow_start_pairs_progress_done(app, study_dir):
  """Landing -> start (HttpOnly cookie) -> pairs 1..N with progress -> a thank-you page
  that is the same whatever the participant answered: a score there told a script which
  image of each pair is real (throwaway participants differing in one answer)."""
  client = new_client(app)
  landing = client.get('/')
  assert landing.status_code == 200 and 'id="start"' in landing.text
  assert f'{NUM_PAIRS} pairs' in landing.text
  response = start(client, age_range='20-24',
                   field_of_study='biology \U0001F469\u200d\U0001F4BB')   # an emoji with a joiner
  assert response.headers['location'] == '/study'
  cookie_header = response.headers['set-cookie'].lower()
  assert 'httponly' in cookie_header and 'samesite=lax' in cookie_header
  seen = []
  for k in range(1, NUM_PAIRS + 1):
    page = current(client)
    assert (page['number'], page['total']) == (k, NUM_PAIRS)
    assert f'Pair {k} of {NUM_PAIRS}' in page['html']
    seen.append(page['pair_id'])
    assert answer(client, page['pair_id'], page['right']).status_code == 303
  assert sorted(seen) == sorted(p.pair_id for p in app.state.study.pairs)
  assert client.get('/study', follow_redirects=False).headers['location'] == '/done'
  done = client.get('/done')
  assert done.status_code == 200 and 'Thank you' in done.text
  # Another participant with another score sees the very same page.
  fooled = sum(a.fooled for a in app.state.store.answers())
  pick_real = fooled == 0   # so that the other's fool count differs
  other = new_client(app)
  start(other)
  while other.get('/study', follow_redirects=False).status_code != 303:
    page = current(other)
    real = app.state.study.pair(page['pair_id']).real_image
    fake = page['left'] if page['right'] == real else page['right']
    assert answer(other, page['pair_id'], real if pick_real else fake).status_code == 303
  others = sum(a.fooled for a in app.state.store.answers()) - fooled
  assert others != fooled
  assert other.get('/done').text == done.text
  assert 'Continue' not in client.get('/').text
  participants = app.state.store.participants()
  assert [(p.age_range, p.field_of_study, p.answered) for p in participants] == [
      ('20-24', 'biology \U0001F469\u200d\U0001F4BB', NUM_PAIRS), ('', '', NUM_PAIRS)]


def test_reload_and_return_continue_where_left(app):
  """A reload shows the same pair with the same left/right placement; coming back later
  with the cookie (a new client) continues at the same pair; re-posting the start form
  does not create a second participant."""
  client = new_client(app)
  start(client)
  page = current(client)
  assert answer(client, page['pair_id'], page['left']).status_code == 303
  again = current(client)
  assert current(client)['html'] == again['html']
  later = new_client(app, client.cookies[cookie_name(client.app)])
  assert current(later)['html'] == again['html']
  assert 'Continue' in later.get('/').text
  start(later)
  assert len(app.state.store.participants()) == 1
  assert current(later)['number'] == 2


def test_restart_keeps_answers(study_dir):
  """A new app instance on the same study folder (a restarted server) sees earlier
  participants and answers: the participant continues, old answers stay final."""
  app1 = server.create_app(study_dir, results_token=TOKEN)
  client = new_client(app1)
  start(client)
  first = current(client)
  complete(client, 'left', limit=2)
  cookie = client.cookies[cookie_name(client.app)]
  del app1, client

  app2 = server.create_app(study_dir, results_token=TOKEN)
  client2 = new_client(app2, cookie)
  assert current(client2)['number'] == 3
  assert answer(client2, first['pair_id'], first['right']).status_code == 409
  data = report_lib.report(study_dir)
  assert data['overall_all_answers']['answers'] == 2
  assert data['participants'] == {'total': 1, 'completed': 0, 'partial': 1, 'not_started': 0}


def test_placements_are_random_per_participant_and_balanced(study_dir):
  """Each participant gets their own pair order and sides, with the real image on the left
  in half their pairs (2 or 3 of 5); across participants each pair is shown with the
  real image on either side."""
  study = study_lib.load_study(study_dir)
  store = store_lib.Store(study, rng=random.Random(1234))
  app = server.create_app(study_dir, results_token=TOKEN, store=store)
  layouts, real_left_by_pair = set(), {p.pair_id: set() for p in study.pairs}
  for _ in range(12):
    client = new_client(app)
    start(client)
    pid = store.participant_id(client.cookies[cookie_name(client.app)])
    placements = store.placements(pid)
    assert sorted(pl.pair_id for pl in placements) == sorted(real_left_by_pair)
    real_left = [pl.left_image == study.pair(pl.pair_id).real_image for pl in placements]
    assert sum(real_left) in (NUM_PAIRS // 2, (NUM_PAIRS + 1) // 2)
    for pl, left in zip(placements, real_left, strict=True):
      real_left_by_pair[pl.pair_id].add(left)
    layouts.add(tuple((pl.pair_id, pl.left_image) for pl in placements))
    assert current(client)['left'] == placements[0].left_image
  assert len(layouts) == 12
  assert all(sides == {True, False} for sides in real_left_by_pair.values())


def test_pair_page_and_images_do_not_reveal_the_real_one(app):
  """The two photos are rendered by identical markup (only name and side differ), the page
  holds no photo id or truth words, and the two image responses have the same headers
  (no file name, date or ETag; the same length) and metadata-free PNG bodies."""
  client = new_client(app)
  start(client)
  page = current(client)
  pair = app.state.study.pair(page['pair_id'])
  normalised = [re.sub(r'[0-9a-f]{32}\.png', 'NAME', b) for b in page['buttons']]
  normalised = [re.sub(r'left|right|Left|Right', 'SIDE', b) for b in normalised]
  assert normalised[0] == normalised[1]
  lowered = page['html'].lower()
  for word in ('real', 'fake', 'original', pair.photo_id.lower()):
    assert word not in lowered
  assert {page['left'], page['right']} == set(pair.images)

  responses = {name: client.get(f'/img/{name}') for name in pair.images}
  real, gen = responses[pair.real_image], responses[pair.generated_image]
  assert real.status_code == gen.status_code == 200
  assert set(real.headers) == set(gen.headers)
  for key in real.headers:   # content-length included: a smaller file was the colorization
    assert real.headers[key] == gen.headers[key], key
  for r in (real, gen):
    assert r.headers['content-type'] == 'image/png'
    for key in ('content-disposition', 'last-modified', 'etag'):
      assert key not in r.headers
    blob = ' '.join(f'{k}: {v}' for k, v in r.headers.items()).lower()
    for word in ('real', 'fake', 'generat', pair.photo_id.lower()):
      assert word not in blob
    assert b'tEXt' not in r.content and b'eXIf' not in r.content and b'iTXt' not in r.content


def test_double_submission_is_rejected_and_first_answer_stays(app, study_dir):
  """A replayed answer and an attempt to change it both get 409; the stored answer is the
  first one; the database refuses UPDATE and DELETE of answers."""
  client = new_client(app)
  start(client)
  page = current(client)
  assert answer(client, page['pair_id'], page['left']).status_code == 303
  assert answer(client, page['pair_id'], page['left']).status_code == 409
  conflict = answer(client, page['pair_id'], page['right'])
  assert conflict.status_code == 409 and 'cannot be changed' in conflict.text
  rows = app.state.store.answers()
  assert [(r.pair_id, r.chosen_image, r.chosen_side) for r in rows] == [
      (page['pair_id'], page['left'], 'left')]
  with sqlite3.connect(study_dir / study_lib.RESPONSES_DB) as conn:
    with pytest.raises(sqlite3.IntegrityError, match='cannot be changed'):
      conn.execute('UPDATE answers SET fooled = 1 - fooled')
    with pytest.raises(sqlite3.IntegrityError, match='cannot be deleted'):
      conn.execute('DELETE FROM answers')


def test_only_the_pair_being_shown_can_be_answered(app, study_dir):
  """An answer to a later pair (never shown to the participant) is refused with 409 and
  not stored; the pair shown is still the one to answer; port numbers outside 0..65535
  are refused rather than wrapped around."""
  client = new_client(app)
  start(client)
  page = current(client)
  later = next(p for p in app.state.study.pairs if p.pair_id != page['pair_id'])
  before = count_answers(study_dir)
  refused = answer(client, later.pair_id, later.images[0])
  assert refused.status_code == 409 and 'in order' in refused.text
  assert count_answers(study_dir) == before
  assert current(client)['pair_id'] == page['pair_id']
  assert answer(client, page['pair_id'], page['left']).status_code == 303
  with pytest.raises(ValueError, match='port'):
    server.serve(study_dir, port=70000)


def _hostile_cases():
  form = {'content-type': 'application/x-www-form-urlencoded'}
  ok = lambda p: {'data': {'pair_id': p['pair_id'], 'choice': p['left']}}  # noqa: E731
  return [
      # (id, method, path, kwargs(page, other_pair_page) -> dict, cookie, expected status)
      ('no-cookie', 'POST', '/answer', ok, None, 403),
      ('bogus-cookie-answer', 'POST', '/answer', ok, 'bogus', 403),
      ('bogus-cookie-study', 'GET', '/study', lambda p: {}, 'bogus', 403),
      ('bogus-cookie-done', 'GET', '/done', lambda p: {}, 'bogus', 403),
      ('unknown-pair', 'POST', '/answer',
       lambda p: {'data': {'pair_id': '0' * 16, 'choice': p['left']}}, 'own', 404),
      ('malformed-pair', 'POST', '/answer',
       lambda p: {'data': {'pair_id': '../../x', 'choice': p['left']}}, 'own', 404),
      ('missing-choice', 'POST', '/answer',
       lambda p: {'data': {'pair_id': p['pair_id']}}, 'own', 400),
      ('missing-pair', 'POST', '/answer', lambda p: {'data': {'choice': p['left']}}, 'own', 400),
      ('empty-form', 'POST', '/answer', lambda p: {}, 'own', 400),
      ('json-body', 'POST', '/answer',
       lambda p: {'json': {'pair_id': p['pair_id'], 'choice': p['left']}}, 'own', 400),
      ('field-twice', 'POST', '/answer',
       lambda p: {'data': {'pair_id': [p['pair_id']] * 2, 'choice': p['left']}}, 'own', 400),
      ('choice-as-file', 'POST', '/answer',
       lambda p: {'data': {'pair_id': p['pair_id']}, 'files': {'choice': ('x.png', b'x')}},
       'own', 400),
      ('choice-random-name', 'POST', '/answer',
       lambda p: {'data': {'pair_id': p['pair_id'], 'choice': 'ab' * 16 + '.png'}}, 'own', 400),
      ('choice-traversal', 'POST', '/answer',
       lambda p: {'data': {'pair_id': p['pair_id'], 'choice': '../study.json'}}, 'own', 400),
      ('choice-other-pairs-image', 'POST', '/answer',
       lambda p: {'data': {'pair_id': p['pair_id'], 'choice': p['other_image']}}, 'own', 400),
      ('broken-multipart', 'POST', '/answer',
       lambda p: {'content': b'--x\r\nContent-Disposition: form-data\r\n\r\nbroken',
                  'headers': {'content-type': 'multipart/form-data; boundary=x'}}, 'own', 400),
      ('invalid-utf8-form', 'POST', '/answer',
       lambda p: {'content': b'pair_id=%ff%fe&choice=%c0%af', 'headers': form}, 'own', 404),
      ('oversized', 'POST', '/answer',
       lambda p: {'content': b'a' * (17 * 1024), 'headers': form}, 'own', 413),
      ('oversized-chunked', 'POST', '/answer',
       lambda p: {'content': iter([b'a' * 1024] * 20), 'headers': form}, 'own', 413),
      ('bad-content-length', 'POST', '/answer',
       lambda p: {'content': b'x', 'headers': {**form, 'content-length': 'abc'}}, 'own', 400),
      ('img-traversal', 'GET', '/img/../../etc/passwd', lambda p: {}, 'own', 404),
      ('img-encoded-traversal', 'GET', '/img/..%2f..%2fetc%2fpasswd', lambda p: {}, 'own', 404),
      ('img-dot-encoded', 'GET', '/img/%2e%2e/%2e%2e/etc/passwd', lambda p: {}, 'own', 404),
      ('img-double-encoded', 'GET', '/img/..%252fstudy.json', lambda p: {}, 'own', 404),
      ('img-manifest', 'GET', '/img/study.json', lambda p: {}, 'own', 404),
      ('img-nul', 'GET', '/img/%00', lambda p: {}, 'own', 404),
      ('static-traversal', 'GET', '/static/..%2f..%2fstudy.py', lambda p: {}, 'own', 404),
      ('manifest', 'GET', '/study.json', lambda p: {}, 'own', 404),
      ('database', 'GET', '/responses.sqlite', lambda p: {}, 'own', 404),
      ('get-answer', 'GET', '/answer', lambda p: {}, 'own', 405),
      ('delete-answer', 'DELETE', '/answer', lambda p: {}, 'own', 405),
      ('put-answer', 'PUT', '/answer', ok, 'own', 405),
      ('get-start', 'GET', '/start', lambda p: {}, 'own', 405),
      ('post-study', 'POST', '/study', lambda p: {}, 'own', 405),
      ('post-results', 'POST', '/results', lambda p: {}, 'own', 405),
      ('put-img', 'PUT', '/img/x.png', lambda p: {}, 'own', 405),
      ('results-no-token', 'GET', '/results', lambda p: {}, 'own', 403),
      ('results-wrong-token', 'GET', '/results?token=guess', lambda p: {}, 'own', 403),
      ('results-unicode-token', 'GET', '/results?token=%C3%A9%ff', lambda p: {}, 'own', 403),
      ('csv-no-token', 'GET', '/results.csv', lambda p: {}, 'own', 403),
      ('start-bad-age', 'POST', '/start', lambda p: {'data': {'age_range': '<script>'}}, None,
       400),
      ('start-long-field', 'POST', '/start',
       lambda p: {'data': {'field_of_study': 'x' * 500}}, None, 400),
      ('start-control-chars', 'POST', '/start',
       lambda p: {'data': {'field_of_study': 'a\x00b'}}, None, 400),
      ('line-separator', 'POST', '/start',
       lambda p: {'data': {'field_of_study': 'a\u2028b'}}, None, 400),
  ]


@pytest.mark.parametrize('case', _hostile_cases(), ids=lambda c: c[0])
def test_hostile_requests_get_4xx_and_change_nothing(app, study_dir, case):
  """Unknown participants/pairs, malformed forms, bad choices, oversized bodies, path
  traversal, wrong methods and missing tokens get the expected 4xx (never a 500), and
  store no answer and no participant."""
  _, method, path, kwargs_for, cookie, expected = case
  owner = new_client(app)
  start(owner)
  page = current(owner)
  pair = app.state.study.pair(page['pair_id'])
  page['other_image'] = next(p for p in app.state.study.pairs if p != pair).images[0]
  cookie_value = {'own': owner.cookies[cookie_name(owner.app)], None: None}.get(cookie, cookie)
  client = new_client(app, cookie_value)
  response = client.request(method, path, follow_redirects=False, **kwargs_for(page))
  assert response.status_code == expected, response.text[:300]
  if expected == 405:
    assert 'allow' in {k.lower() for k in response.headers}
  if cookie == 'bogus':
    assert cookie_name(app) in response.headers.get('set-cookie', '')  # cleared
  assert 'Traceback' not in response.text
  assert count_answers(study_dir) == 0
  assert len(app.state.store.participants()) == 1
  assert current(owner)['number'] == 1


def test_concurrent_duplicate_answers_count_once(study_dir):
  """Eight simultaneous submissions for one pair by one participant, through eight
  separate app instances (as from several server processes), store exactly one answer:
  one 303, the rest 409, and the stored choice is the accepted one."""
  app = server.create_app(study_dir, results_token=TOKEN)
  client = new_client(app)
  start(client)
  page = current(client)
  cookie = client.cookies[cookie_name(client.app)]
  apps = [server.create_app(study_dir, results_token=TOKEN) for _ in range(8)]
  barrier = threading.Barrier(len(apps))
  results = [None] * len(apps)

  def submit(i):
    c = new_client(apps[i], cookie)
    choice = page['left'] if i % 2 else page['right']
    barrier.wait()
    results[i] = (answer(c, page['pair_id'], choice).status_code, choice)

  threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(apps))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  codes = sorted(code for code, _ in results)
  assert codes == [303] + [409] * (len(apps) - 1)
  accepted = next(choice for code, choice in results if code == 303)
  rows = app.state.store.answers()
  assert [(r.pair_id, r.chosen_image) for r in rows] == [(page['pair_id'], accepted)]


def test_concurrent_participants_are_all_counted(app, study_dir):
  """Six participants answering all pairs at the same time: every answer is stored once,
  and the report counts 6 x N answers, N per participant and 6 per pair."""
  errors = []

  def participant():
    try:
      client = new_client(app)
      start(client)
      complete(client, 'left')
    except Exception as e:  # noqa: BLE001 - reported by the main thread
      errors.append(e)

  threads = [threading.Thread(target=participant) for _ in range(6)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == []
  assert count_answers(study_dir) == 6 * NUM_PAIRS
  data = report_lib.report(study_dir)
  assert data['overall']['answers'] == 6 * NUM_PAIRS
  assert [p['answers'] for p in data['per_pair']] == [6] * NUM_PAIRS
  assert [p['answered'] for p in data['per_participant']] == [NUM_PAIRS] * 6


def test_results_page_csv_and_partial_participants(app, study_dir):
  """/results (with the token) shows the completed participants' fool rate with its Wilson
  interval, per-pair rows with thumbnails and the paper's references; partial participants
  count only in the all-answers rate; the CSV has one row per stored answer, with free
  text that a spreadsheet would run as a formula (also after a ';' list separator) quoted."""
  full, partial, plain = new_client(app), new_client(app), new_client(app)
  start(full, field_of_study='=HYPERLINK("http://x")')
  start(partial, field_of_study='geology; =1+2')
  start(plain, field_of_study='art, history - modern')
  complete(plain, 'left', limit=1)
  complete(full, 'left')
  complete(partial, 'right', limit=2)
  data = report_lib.report(study_dir)
  store, study = app.state.store, app.state.study
  pid = store.participant_id(full.cookies[cookie_name(full.app)])
  fooled = sum(pl.left_image == study.pair(pl.pair_id).real_image
               for pl in store.placements(pid))
  assert data['overall']['fooled'] == fooled and data['overall']['answers'] == NUM_PAIRS
  assert data['overall_all_answers']['answers'] == NUM_PAIRS + 3
  assert data['participants'] == {'total': 3, 'completed': 1, 'partial': 2, 'not_started': 0}
  rates = [p['rate'] for p in data['per_pair']]
  assert rates == sorted(rates, reverse=True)

  page = new_client(app).get('/results', params={'token': TOKEN})
  assert page.status_code == 200
  rate = f'{100 * fooled / NUM_PAIRS:.1f}%'
  assert f'<strong id="overall-rate">{rate}</strong>' in page.text
  assert f'data-fooled="{fooled}" data-answers="{NUM_PAIRS}"' in page.text
  low, high = data['overall']['ci95']
  assert f'{100 * low:.1f}% to {100 * high:.1f}%' in page.text
  assert '23.0%' in page.text and '32.0%' in page.text
  for name in study.image_names():
    assert f'src="/img/{name}"' in page.text

  csv_response = new_client(app).get('/results.csv', params={'token': TOKEN})
  assert csv_response.status_code == 200
  rows = list(csv.DictReader(io.StringIO(csv_response.text)))
  assert tuple(rows[0]) == report_lib.CSV_FIELDS
  assert len(rows) == NUM_PAIRS + 3
  assert sum(r['participant_completed'] == '1' for r in rows) == NUM_PAIRS
  assert sum(int(r['fooled']) for r in rows if r['participant_completed'] == '1') == fooled
  assert {r['field_of_study'] for r in rows} == {
      "'=HYPERLINK(\"http://x\")", "geology; '=1+2", 'art, history - modern'}
  # Read as a spreadsheet whose list separator is ';' reads it: no cell starts a formula
  # (the text after 'geology;' was a cell of its own, starting with '=').
  for row in csv.reader(io.StringIO(csv_response.text), delimiter=';'):
    assert not any(cell.strip()[:1] in ('=', '+', '-', '@') for cell in row), row


def test_write_report_files(app, study_dir, tmp_path):
  """write_report writes a self-contained results.html (thumbnails inlined, no server URLs)
  and answers.csv, and returns the same numbers as report()."""
  client = new_client(app)
  start(client)
  complete(client, 'left')
  data = report_lib.write_report(study_dir, tmp_path / 'out')
  assert data['overall'] == report_lib.report(study_dir)['overall']
  html = (tmp_path / 'out' / 'results.html').read_text()
  assert html.count('data:image/png;base64,') == 2 * NUM_PAIRS
  assert '/img/' not in html and '/static/' not in html
  assert f'{100 * data["overall"]["rate"]:.1f}%' in html
  assert len((tmp_path / 'out' / 'answers.csv').read_text().splitlines()) == 1 + NUM_PAIRS
  default = report_lib.write_report(study_dir)
  assert default['files']['html'] == str(study_dir / 'report' / 'results.html')


def test_foreign_or_corrupt_responses_are_refused(study_dir, tmp_path):
  """A responses database made for another build of the study, or a corrupt one, is
  refused with a clear StudyError instead of mixing answers or crashing."""
  server.create_app(study_dir)
  other = tmp_path / 'other'
  study_lib.build_study(make_photos(8), hue_shift, other, num_pairs=NUM_PAIRS, seed=0)
  (other / study_lib.RESPONSES_DB).write_bytes((study_dir / study_lib.RESPONSES_DB).read_bytes())
  with pytest.raises(study_lib.StudyError, match='another build'):
    server.create_app(other)
  (other / study_lib.RESPONSES_DB).write_bytes(b'not a database' * 100)
  with pytest.raises(study_lib.StudyError, match='cannot open'):
    server.create_app(other)
  # Garbage over a page that opening the database does not read (an index of the
  # placements): found when it is opened, by the server and the report alike, not by
  # each participant's answer later (a 500 for everyone) or a report's traceback.
  damaged = tmp_path / 'damaged'
  study_lib.build_study(make_photos(8), hue_shift, damaged, num_pairs=NUM_PAIRS, seed=0)
  start(new_client(server.create_app(damaged)))
  db = damaged / study_lib.RESPONSES_DB
  with contextlib.closing(sqlite3.connect(db)) as conn:
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND "
                           "tbl_name = 'placements' ORDER BY rootpage").fetchone()
  data = db.read_bytes()
  page = int.from_bytes(data[16:18], 'big')
  start_at = (root - 1) * page
  db.write_bytes(data[:start_at] + bytes(range(256)) * (page // 256) + data[start_at + page:])
  for open_it in (server.create_app, report_lib.write_report):
    with pytest.raises(study_lib.StudyError, match='is damaged'):
      open_it(damaged)


def test_importing_starts_nothing():
  """Importing the package and the server module loads no web server and opens no
  socket: uvicorn is imported only inside serve()."""
  code = ('import sys, colorize_jax.turing as t; assert "starlette" not in sys.modules; '
          'from colorize_jax.turing import server; assert "uvicorn" not in sys.modules; '
          'assert callable(t.serve) and callable(t.write_report)')
  subprocess.run([sys.executable, '-c', code], check=True, timeout=120)


def test_serve_prints_urls_only_for_a_port_it_listens_on(study_dir, capsys):
  """A port in use is an OSError naming the address, raised before any URL is printed
  (the URLs used to be printed first); the study is left servable."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(OSError, match=f'cannot listen on 127.0.0.1:{port}'):
      server.serve(study_dir, port=port)
  assert 'http://' not in capsys.readouterr().out
  with study_lib.serving_lock(study_dir):   # the failed serve released its lock
    pass


@pytest.mark.parametrize('host', ['127.0.0.1', '0.0.0.0'])
def test_serve_on_port_0_prints_the_port_that_answers(study_dir, host):
  """With port 0 the system picks a port: the printed participant URL is that port's
  and answers (it used to print ':0'); on every interface it names this machine, not
  the address 0.0.0.0 that no participant can open."""
  import socket  # pylint: disable=g-import-not-at-top
  code = ('import sys; from colorize_jax.turing import server; '
          'server.serve(sys.argv[1], host=sys.argv[2], port=0, log_level="warning")')
  proc = subprocess.Popen([sys.executable, '-c', code, str(study_dir), host],
                          stdout=subprocess.PIPE, text=True)
  try:
    line = proc.stdout.readline()
    shown = '127.0.0.1' if host == '127.0.0.1' else socket.gethostname()
    match = re.search(rf'http://{re.escape(shown)}:(\d+)/ ', line)
    assert match and int(match.group(1)) != 0, line
    with urllib.request.urlopen(f'http://127.0.0.1:{match.group(1)}/', timeout=60) as page:
      assert page.status == 200
  finally:
    proc.terminate()
    proc.wait(timeout=60)


def test_a_report_over_an_edited_manifest_says_so(study_dir):
  """Answers to a pair that study.json no longer lists (a pair removed by hand) are a
  StudyError naming the manifest, not a traceback from the statistics."""
  import json  # pylint: disable=g-import-not-at-top
  client = new_client(server.create_app(study_dir))
  start(client)
  page = current(client)
  assert answer(client, page['pair_id'], page['left']).status_code == 303
  manifest = json.loads((study_dir / study_lib.MANIFEST).read_text())
  manifest['pairs'] = [p for p in manifest['pairs'] if p['pair_id'] != page['pair_id']]
  (study_dir / study_lib.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(study_lib.StudyError, match='does not list'):
    report_lib.write_report(study_dir)


def test_two_studies_on_one_host_keep_their_participants_apart(tmp_path):
  """Browsers share cookies across ports: starting a second study served on the same host
  must not replace (and so lose) the participant's place in the first."""
  apps = []
  for name in ('a', 'b'):
    study_lib.build_study(make_photos(8), hue_shift, tmp_path / name, num_pairs=NUM_PAIRS,
                          seed=0)
    apps.append(server.create_app(tmp_path / name))
  assert cookie_name(apps[0]) != cookie_name(apps[1])
  first = new_client(apps[0])
  start(first)
  page = current(first)
  assert answer(first, page['pair_id'], page['left']).status_code == 303
  second = new_client(apps[1])
  second.cookies = first.cookies   # one browser
  start(second)
  first.cookies = second.cookies
  assert current(first)['number'] == 2   # still in the first study, one pair answered


def test_results_token_is_kept_with_the_study_and_private(study_dir):
  """Without a token given, the study's own is used: the same after a restart (a bookmarked
  results URL keeps working), in a file only its owner can read, and a rebuild's new study
  gets a new one; a damaged token file is a StudyError, not a guessable token."""
  import stat  # pylint: disable=g-import-not-at-top
  first = server.create_app(study_dir).state.results_token
  assert server.create_app(study_dir).state.results_token == first
  path = study_dir / study_lib.RESULTS_TOKEN
  assert stat.S_IMODE(path.stat().st_mode) == 0o600
  assert new_client(server.create_app(study_dir)).get(
      '/results', params={'token': first}).status_code == 200
  path.write_text('\n')
  with pytest.raises(study_lib.StudyError, match='no valid results token'):
    server.create_app(study_dir)
  path.write_text(first)
  study_lib.build_study(make_photos(8), hue_shift, study_dir, num_pairs=NUM_PAIRS, seed=1,
                        overwrite=True)
  assert server.create_app(study_dir).state.results_token != first


def test_a_request_body_that_never_arrives_gets_408():
  """A client announcing a body and sending part of it (or nothing) is answered 408 after
  the timeout, instead of holding its connection open for ever; the app never runs."""
  import asyncio  # pylint: disable=g-import-not-at-top
  ran, sent = [], []

  async def app(scope, receive, send):
    ran.append(scope)

  async def trickle():
    if not sent:
      sent.append('first')
      return {'type': 'http.request', 'body': b'a=1', 'more_body': True}
    await asyncio.sleep(3600)

  async def send(message):
    sent.append(message)

  middleware = server.BodyLimitMiddleware(app, timeout_s=0.2)
  scope = {'type': 'http', 'headers': [(b'content-length', b'1000')]}
  asyncio.run(asyncio.wait_for(middleware(scope, trickle, send), 30))
  assert not ran
  assert sent[1]['type'] == 'http.response.start' and sent[1]['status'] == 408


def test_served_access_log_hides_the_results_token_and_trusts_a_local_https_proxy(study_dir):
  """The access log (console, captured logs) never shows the results secret; behind an HTTPS
  proxy on this machine (X-Forwarded-Proto), the participant's cookie is marked Secure."""
  code = ('import sys; from colorize_jax.turing import server; '
          'server.serve(sys.argv[1], port=0, log_level="info")')
  proc = subprocess.Popen([sys.executable, '-c', code, str(study_dir)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    results_url = re.search(r'(http://\S+token=(\S+))', lines[1])
    assert results_url, lines
    token = results_url.group(2)
    with urllib.request.urlopen(results_url.group(1), timeout=60) as page:
      assert page.status == 200
    base = results_url.group(1).split('/results')[0]
    request = urllib.request.Request(f'{base}/start', data=b'', method='POST',
                                     headers={'X-Forwarded-Proto': 'https'})
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(request, timeout=60) as response:
      assert 'secure' in response.headers['set-cookie'].lower()
  finally:
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
  assert 'GET /results?token=<hidden>' in out
  assert token not in out


class _NoRedirect(urllib.request.HTTPRedirectHandler):
  """Hands back a 303 as it is (its Set-Cookie is what is looked at)."""

  def http_error_303(self, req, fp, code, msg, headers):
    return fp
