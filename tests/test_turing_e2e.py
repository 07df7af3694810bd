"""End-to-end tests of the Turing-test study: a real uvicorn server on a free port, raw
HTTP over a socket, and a scripted participant in headless Chromium (Playwright).

The browser test needs Debian's `chromium` at /usr/bin/chromium and the `playwright`
Python package (no `playwright install`: the system Chromium is used); without them it
is skipped with the reason. CI installs both.
"""

import os
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip('starlette')
uvicorn = pytest.importorskip('uvicorn')

from colorize_jax.turing import server  # noqa: E402
from colorize_jax.turing import study as study_lib  # noqa: E402

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                 '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
NUM_PAIRS = 5
TOKEN = 'e2e-results-token'


def hue_shift(rgb):
  return np.ascontiguousarray(rgb[..., [1, 2, 0]])


@pytest.fixture(scope='module')
def live(tmp_path_factory):
  """A uvicorn server in a thread, serving a 5-pair study of 32x32 photos."""
  rng = np.random.default_rng(0)
  photos = [(f'photo_{i}', rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            for i in range(8)]
  study_dir = tmp_path_factory.mktemp('turing') / 'study'
  study_lib.build_study(photos, hue_shift, study_dir, num_pairs=NUM_PAIRS, seed=0)
  app = server.create_app(study_dir, results_token=TOKEN)
  # Binding port 0 here and handing the socket to uvicorn avoids a free-port race.
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.bind(('127.0.0.1', 0))
  port = sock.getsockname()[1]
  srv = uvicorn.Server(uvicorn.Config(app, log_level='warning', lifespan='off'))
  thread = threading.Thread(target=srv.run, kwargs={'sockets': [sock]}, daemon=True)
  thread.start()
  deadline = time.monotonic() + 60
  while not srv.started:
    if not thread.is_alive() or time.monotonic() > deadline:
      pytest.fail('uvicorn did not start')
    time.sleep(0.05)
  yield {'url': f'http://127.0.0.1:{port}', 'port': port, 'app': app, 'study_dir': study_dir}
  srv.should_exit = True
  thread.join(timeout=30)
  sock.close()


def raw_http(port, request: bytes) -> tuple[int, bytes]:
  """Sends bytes as they are (no client-side path normalisation); returns status, body."""
  with socket.create_connection(('127.0.0.1', port), timeout=30) as conn:
    conn.sendall(request)
    data = b''
    while True:
      try:
        chunk = conn.recv(65536)
      except ConnectionResetError:
        break
      if not chunk:
        break
      data += chunk
  head, _, body = data.partition(b'\r\n\r\n')
  return int(head.split(b' ', 2)[1]), body


@pytest.mark.parametrize('path', [
    '/img/../../etc/passwd', '/img/../study.json', '/img/%2e%2e/%2e%2e/etc/passwd',
    '/img/..%2f..%2fetc%2fpasswd', '/img/..%2fstudy.json', '/img/%2e%2e%2fstudy.json',
    '/img/..%5c..%5cstudy.json', '/img/....//....//etc/passwd', '/static/../study.json',
    '/static/%2e%2e/%2e%2e/study.json', '/static/..%2f..%2fstudy.json',
    '/../../etc/passwd', '/img/%252e%252e%252fstudy.json',
])
def test_raw_path_traversal_is_404(live, path):
  """Paths that try to leave the study's image folder, sent verbatim over a socket to the
  real server, get 404 and never a file from outside (passwd, manifest)."""
  status, body = raw_http(live['port'], f'GET {path} HTTP/1.1\r\nHost: x\r\n'
                                        'Connection: close\r\n\r\n'.encode())
  assert status == 404
  assert b'root:' not in body and b'real_image' not in body


def test_raw_oversized_bodies_are_413(live):
  """Over the real socket, a body announced larger than 16 KiB and a chunked body that
  grows past 16 KiB both get 413 before any form parsing."""
  status, _ = raw_http(live['port'], b'POST /answer HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Type: application/x-www-form-urlencoded\r\n'
                       b'Content-Length: 100000\r\nConnection: close\r\n\r\n' + b'a' * 1000)
  assert status == 413
  chunk = b'%x\r\n%s\r\n' % (4096, b'a' * 4096)
  status, _ = raw_http(live['port'], b'POST /answer HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Type: application/x-www-form-urlencoded\r\n'
                       b'Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n'
                       + chunk * 5 + b'0\r\n\r\n')
  assert status == 413


def test_browser_participant_results_match_placements(live):
  """A participant in headless Chromium fills the background fields, starts, sees "Pair k
  of 5" with the left photo drawn left of the right one, keeps the same placement across a
  reload, always clicks the left photo and reaches the thank-you page; a second participant
  stops after two pairs (a double click stores one answer). The results page then shows
  exactly the fool rate computed from the first participant's stored placements, and
  no page logs a console error (CSP, missing CSS/JS/images)."""
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'needs {CHROMIUM} (Debian package chromium)')
  sync_api = pytest.importorskip('playwright.sync_api',
                                 reason='needs the playwright Python package')
  url, app = live['url'], live['app']
  store, study = app.state.store, app.state.study
  errors = []

  def watch(page):
    page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(str(e)))
    return page

  def participant_id(context):
    token = next(c['value'] for c in context.cookies()
                 if c['name'] == server.participant_cookie(study))
    return store.participant_id(token)

  with sync_api.sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
      first = browser.new_context()
      page = watch(first.new_page())
      page.goto(url + '/')
      page.select_option('#age_range', '20-24')
      page.fill('#field_of_study', 'computer science')
      page.click('#start')
      for k in range(1, NUM_PAIRS + 1):
        page.wait_for_url('**/study')
        assert page.inner_text('#progress') == f'Pair {k} of {NUM_PAIRS}'
        srcs = [page.get_attribute(f'#choice-{s} img', 'src') for s in ('left', 'right')]
        left_box = page.locator('#choice-left').bounding_box()
        right_box = page.locator('#choice-right').bounding_box()
        assert left_box['x'] + left_box['width'] <= right_box['x']
        assert page.eval_on_selector('#choice-left img', 'i => i.naturalWidth') == 32
        if k == 3:
          page.reload()
          assert [page.get_attribute(f'#choice-{s} img', 'src')
                  for s in ('left', 'right')] == srcs
        with page.expect_navigation():
          page.click('#choice-left')
      page.wait_for_url('**/done')
      assert page.inner_text('h1') == 'Thank you!'

      second = browser.new_context()
      page2 = watch(second.new_page())
      page2.goto(url + '/')
      page2.click('#start')
      page2.wait_for_url('**/study')
      with page2.expect_navigation():
        page2.dblclick('#choice-left')
      page2.wait_for_load_state('networkidle')
      assert page2.inner_text('#progress') == f'Pair 2 of {NUM_PAIRS}'
      with page2.expect_navigation():
        page2.click('#choice-left')

      pid = participant_id(first)
      placements = store.placements(pid)
      answers = [a for a in store.answers() if a.participant_id == pid]
      assert [a.chosen_side for a in answers] == ['left'] * NUM_PAIRS
      assert [a.pair_id for a in answers] == [pl.pair_id for pl in placements]
      fooled = sum(pl.left_image == study.pair(pl.pair_id).real_image for pl in placements)
      pid2 = participant_id(second)
      assert sum(a.participant_id == pid2 for a in store.answers()) == 2

      page.goto(f'{url}/results?token={TOKEN}')
      assert page.inner_text('#overall-rate') == f'{100 * fooled / NUM_PAIRS:.1f}%'
      assert page.inner_text('#overall-counts') == f'{fooled} of {NUM_PAIRS}'
      assert page.locator('#per-pair tbody tr').count() == NUM_PAIRS
      assert page.locator('#per-participant tbody tr').count() == 2
      completed = page.locator('#per-participant tbody tr td:last-child').all_inner_texts()
      assert sorted(completed) == ['no', 'yes']
      widths = page.eval_on_selector_all('img.thumb', 'imgs => imgs.map(i => i.naturalWidth)')
      assert widths == [32] * (2 * NUM_PAIRS)
      assert errors == []
    finally:
      browser.close()
