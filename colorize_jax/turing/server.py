"""The Turing-test web app (Starlette + Jinja2, served by uvicorn).

URL layout:
  GET  /              task description, optional background fields, start button
  POST /start         creates a participant (token in an HttpOnly cookie) -> /study
  GET  /study         the participant's current pair ("Pair 7 of 20") or -> /done
  POST /answer        pair_id + choice (an image name) -> /study; 409 if answered
  GET  /done          thank-you page (no score: see below)
  GET  /img/<name>    a study image (<32 hex>.png; names are random)
  GET  /results?token=...      results page (token printed by `serve`)
  GET  /results.csv?token=...  all answers as CSV
  GET  /static/...    CSS and JS

Nothing here says which image is real: names are random, both images of a pair
are rendered by the same markup in a per-participant random left/right order,
and image responses carry no file names or modification times. Nor does any
participant learn their score: with it, a script starting throwaway participants
that differ in one answer learned which image of each pair is real, then set the
study's fool rate at will (a reviewer's script took one study to 92%).

The results token is kept in the study folder (`results_token`, readable by its
owner only), so the results URL stays the same across restarts, and is never
written to the access log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
import unicodedata
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from colorize_jax.turing import report as report_lib
from colorize_jax.turing import store as store_lib
from colorize_jax.turing import study as study_lib

COOKIE_PREFIX = 'turing_'   # + the study's id: browsers share cookies across ports
COOKIE_MAX_AGE_S = 180 * 24 * 3600
MAX_BODY_BYTES = 16 * 1024
BODY_TIMEOUT_S = 30.0   # a body trickled in slower than this ties up a connection: 408
MAX_FIELD_LEN = 100
AGE_RANGES = ('under 20', '20-24', '25-28', '29-34', '35-44', '45-59', '60 or over')
_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
_TITLES = {400: 'Bad request', 403: 'Forbidden', 404: 'Not found', 405: 'Method not allowed',
           408: 'Request timeout', 409: 'Already answered', 413: 'Request too large',
           500: 'Server error'}
log = logging.getLogger(__name__)


class BodyLimitMiddleware:
  """Answers 413 to any request whose body exceeds `max_bytes`, 408 to one whose body
  has not arrived whole within `timeout_s`.

  The body is read (up to the cap) before the app sees the request, so neither
  a false Content-Length nor a chunked upload gets past it, and a client that
  announces a body and sends it byte by byte (or never) does not hold its
  connection open for ever.
  """

  def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES,
               timeout_s: float = BODY_TIMEOUT_S):
    self.app = app
    self.max_bytes = max_bytes
    self.timeout_s = timeout_s

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope['type'] != 'http':
      await self.app(scope, receive, send)
      return
    headers = dict(scope['headers'])
    length = headers.get(b'content-length')
    if length is not None:
      if not length.isdigit():
        await _plain(send, 400, b'bad Content-Length')
        return
      if int(length) > self.max_bytes:
        await _plain(send, 413, b'request body too large')
        return
    chunks, total = [], 0
    deadline = asyncio.get_running_loop().time() + self.timeout_s
    while True:
      try:
        message = await asyncio.wait_for(receive(),
                                         deadline - asyncio.get_running_loop().time())
      except asyncio.TimeoutError:
        await _plain(send, 408, b'request body too slow')
        return
      if message['type'] != 'http.request':
        return  # client went away
      chunks.append(message.get('body', b''))
      total += len(chunks[-1])
      if total > self.max_bytes:
        await _plain(send, 413, b'request body too large')
        return
      if not message.get('more_body', False):
        break
    replayed = False

    async def replay() -> Message:
      nonlocal replayed
      if not replayed:
        replayed = True
        return {'type': 'http.request', 'body': b''.join(chunks), 'more_body': False}
      return await receive()

    await self.app(scope, replay, send)


async def _plain(send: Send, status: int, body: bytes) -> None:
  await send({'type': 'http.response.start', 'status': status,
              'headers': [(b'content-type', b'text/plain; charset=utf-8'),
                          (b'content-length', str(len(body)).encode()),
                          (b'connection', b'close')]})
  await send({'type': 'http.response.body', 'body': body})


class SecurityHeadersMiddleware:
  """Adds CSP, nosniff, no-referrer and (unless set) Cache-Control: no-store."""

  def __init__(self, app: ASGIApp):
    self.app = app

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope['type'] != 'http':
      await self.app(scope, receive, send)
      return

    async def send_with_headers(message: Message) -> None:
      if message['type'] == 'http.response.start':
        headers = list(message.get('headers', []))
        names = {k.lower() for k, _ in headers}
        extra = [(b'content-security-policy', _CSP.encode()),
                 (b'x-content-type-options', b'nosniff'),
                 (b'referrer-policy', b'no-referrer'),
                 (b'x-frame-options', b'DENY')]
        if b'cache-control' not in names:
          extra.append((b'cache-control', b'no-store'))
        message = {**message, 'headers': headers + [h for h in extra if h[0] not in names]}
      await send(message)

    await self.app(scope, receive, send_with_headers)


def _single_str(form: FormData, name: str, *, required: bool) -> str:
  values = form.getlist(name)
  if not values:
    if required:
      raise HTTPException(400, f'missing field {name!r}')
    return ''
  if len(values) > 1 or not isinstance(values[0], str):
    raise HTTPException(400, f'field {name!r} must be given once, as text')
  return values[0]


def _clean_text(value: str, name: str) -> str:
  value = unicodedata.normalize('NFC', value).strip()
  if len(value) > MAX_FIELD_LEN:
    raise HTTPException(400, f'{name} is longer than {MAX_FIELD_LEN} characters')
  # Joiners and variation selectors (Cf) are part of ordinary emoji; line and
  # paragraph separators (Zl, Zp) would break the CSV export's one-line rows.
  if any((unicodedata.category(c) in ('Cc', 'Cf', 'Cs', 'Co', 'Cn', 'Zl', 'Zp')
          and c not in _EMOJI_JOINERS) for c in value):
    raise HTTPException(400, f'{name} contains control characters')
  return value


_EMOJI_JOINERS = frozenset('\u200d\ufe0e\ufe0f')   # ZWJ, text / emoji presentation


def participant_cookie(study: study_lib.Study) -> str:
  """The name of the cookie that holds a participant's token for `study`.

  Browsers keep cookies per host, not per port: with one name for all studies, a
  participant starting a second study served on the same host lost their place in
  the first (its server refused the other study's token and cleared the cookie).
  """
  return COOKIE_PREFIX + study.study_id[:16]


def results_token_of(study_dir: str | os.PathLike[str]) -> str:
  """The study's results secret: read from `study_dir/results_token`, made (random,
  readable by its owner only) the first time."""
  path = os.path.join(study_dir, study_lib.RESULTS_TOKEN)
  try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
  except FileExistsError:
    with open(path, encoding='ascii') as f:
      token = f.read().strip()
    if not re.fullmatch(r'[A-Za-z0-9_-]{16,}', token):
      raise study_lib.StudyError(f'{path} holds no valid results token; delete it and a new '
                                 'one is made (the old results URL then stops working).')
    return token
  token = secrets.token_urlsafe(24)
  with os.fdopen(fd, 'w', encoding='ascii') as f:
    f.write(token + '\n')
  return token


class _RedactToken(logging.Filter):
  """Hides the results token in uvicorn's access log lines (the URL's query)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if isinstance(record.args, tuple):
      record.args = tuple(re.sub(r'token=[^&\s]*', 'token=<hidden>', a) if isinstance(a, str)
                          else a for a in record.args)
    return True


def create_app(study_dir: str | os.PathLike[str], *, results_token: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = BODY_TIMEOUT_S,
               store: store_lib.Store | None = None) -> Starlette:
  """Builds the study web app; starts nothing.

  Args:
    study_dir: a folder written by `study.build_study`.
    results_token: secret for /results and /results.csv; default: the study's
      (`results_token_of`; read it back from `app.state.results_token`).
    max_body_bytes: larger request bodies get 413.
    body_timeout_s: request bodies not received whole in this time get 408.
    store: responses database; default `store.Store(study)` (tests pass one
      with a seeded rng).

  Returns:
    The ASGI app.

  Raises:
    study_lib.StudyError: no valid study in `study_dir`.
  """
  study = study_lib.load_study(study_dir)
  db = store or store_lib.Store(study)
  cookie_name = participant_cookie(study)
  token = results_token or results_token_of(study_dir)
  images = study.image_names()
  templates = Jinja2Templates(env=report_lib.templates_env())

  def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    context.setdefault('prefix', request.scope.get('root_path', ''))
    return templates.TemplateResponse(request, name, context, status_code=status_code)

  async def participant(request: Request, *, required: bool) -> int | None:
    """The participant id from the cookie; 403 for an unknown token if required."""
    cookie = request.cookies.get(cookie_name)
    if cookie is None:
      if required:
        raise HTTPException(403, 'no participant: start the study first')
      return None
    pid = await run_in_threadpool(db.participant_id, cookie)
    if pid is None and required:
      raise HTTPException(403, 'unknown participant: start the study again')
    return pid

  async def landing(request: Request) -> Response:
    pid = await participant(request, required=False)
    progress = await run_in_threadpool(db.progress, pid) if pid is not None else None
    return render(request, 'landing.html', num_pairs=study.num_pairs, progress=progress,
                  age_ranges=AGE_RANGES, max_field_len=MAX_FIELD_LEN)

  async def start(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=8, max_part_size=4096)
    age_range = _single_str(form, 'age_range', required=False)
    field = _clean_text(_single_str(form, 'field_of_study', required=False), 'field_of_study')
    if age_range and age_range not in AGE_RANGES:
      raise HTTPException(400, 'age_range must be one of the listed ranges')
    # Reloading or re-posting the start form must not create a second participant.
    prefix = request.scope.get('root_path', '')
    if await participant(request, required=False) is not None:
      return RedirectResponse(prefix + '/study', status_code=303)
    new_token = await run_in_threadpool(db.create_participant, age_range, field)
    response = RedirectResponse(prefix + '/study', status_code=303)
    response.set_cookie(cookie_name, new_token, max_age=COOKIE_MAX_AGE_S, httponly=True,
                        samesite='lax', secure=request.url.scheme == 'https')
    return response

  async def progress_of(request: Request):
    """(progress, None) for a known participant, or (None, a redirect to the landing page)."""
    pid = await participant(request, required=False)
    if pid is None:
      if cookie_name in request.cookies:
        raise HTTPException(403, 'unknown participant: start the study again')
      return None, RedirectResponse(request.scope.get('root_path', '') + '/', status_code=303)
    return await run_in_threadpool(db.progress, pid), None

  async def study_page(request: Request) -> Response:
    progress, redirect = await progress_of(request)
    if redirect is not None:
      return redirect
    prefix = request.scope.get('root_path', '')
    if progress.done:
      return RedirectResponse(prefix + '/done', status_code=303)
    current = progress.current
    return render(request, 'pair.html', number=progress.answered + 1,
                  num_pairs=study.num_pairs, pair_id=current.pair_id,
                  left=current.left_image, right=current.right_image)

  async def answer(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=4, max_part_size=1024)
    pid = await participant(request, required=True)
    pair_id = _single_str(form, 'pair_id', required=True)
    choice = _single_str(form, 'choice', required=True)
    if study.pair(pair_id) is None:
      raise HTTPException(404, 'unknown pair')
    if not study_lib.IMAGE_NAME_RE.match(choice):
      raise HTTPException(400, 'choice must be one of the two photos')
    try:
      await run_in_threadpool(db.record_answer, pid, pair_id, choice)
    except store_lib.AlreadyAnswered:
      raise HTTPException(
          409, 'you already answered this pair; answers cannot be changed') from None
    except store_lib.NotShownYet:
      raise HTTPException(
          409, 'that is not the pair you are being shown; answer the pairs in order') from None
    except store_lib.InvalidChoice:
      raise HTTPException(400, 'choice must be one of the two photos') from None
    except store_lib.UnknownPair:
      raise HTTPException(404, 'unknown pair') from None
    except store_lib.UnknownParticipant:
      raise HTTPException(403, 'unknown participant') from None
    return RedirectResponse(request.scope.get('root_path', '') + '/study', status_code=303)

  async def done(request: Request) -> Response:
    progress, redirect = await progress_of(request)
    if redirect is not None:
      return redirect
    if not progress.done:
      return RedirectResponse(request.scope.get('root_path', '') + '/study', status_code=303)
    return render(request, 'done.html', progress=progress)

  async def image(request: Request) -> Response:
    name = request.path_params['name']
    # Only names from the manifest: no path is ever built from user input.
    if not study_lib.IMAGE_NAME_RE.match(name) or name not in images:
      raise HTTPException(404, 'no such image')
    data = await run_in_threadpool((study.images_dir / name).read_bytes)
    return Response(data, media_type='image/png',
                    headers={'cache-control': 'private, max-age=86400'})

  def check_results_token(request: Request) -> None:
    given = request.query_params.get('token', '')
    if not secrets.compare_digest(given.encode('utf-8', 'surrogatepass'), token.encode()):
      raise HTTPException(403, 'the results need the token printed when the server started')

  async def results(request: Request) -> Response:
    check_results_token(request)
    data = await run_in_threadpool(report_lib.build_report, study, db)
    prefix = request.scope.get('root_path', '')
    html = report_lib.render_results_html(
        data, lambda name: f'{prefix}/img/{name}',
        csv_href=f'{prefix}/results.csv?token={token}', prefix=prefix)
    return Response(html, media_type='text/html; charset=utf-8')

  async def results_csv(request: Request) -> Response:
    check_results_token(request)
    text = await run_in_threadpool(report_lib.answers_csv, study, db)
    return Response(text, media_type='text/csv; charset=utf-8', headers={
        'content-disposition': f'attachment; filename="{report_lib.CSV_NAME}"'})

  async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = exc.status_code
    link, link_text = ('/', 'Back to the start')
    if code == 409:
      link, link_text = '/study', 'Continue with the next pair'
    response = render(request, 'error.html', status_code=code, title=_TITLES.get(code, 'Error'),
                      message=exc.detail, link=link, link_text=link_text)
    for key, value in (exc.headers or {}).items():
      response.headers[key] = value
    if code == 403 and 'unknown participant' in str(exc.detail):
      response.delete_cookie(cookie_name)
    return response

  async def server_error(request: Request, exc: Exception) -> Response:
    log.exception('unhandled error on %s %s', request.method, request.url.path)
    return Response('Internal server error', status_code=500, media_type='text/plain')

  routes = [
      Route('/', landing, methods=['GET']),
      Route('/start', start, methods=['POST']),
      Route('/study', study_page, methods=['GET']),
      Route('/answer', answer, methods=['POST']),
      Route('/done', done, methods=['GET']),
      Route('/img/{name}', image, methods=['GET']),
      Route('/results', results, methods=['GET']),
      Route('/results.csv', results_csv, methods=['GET']),
      Mount('/static', StaticFiles(directory=report_lib.STATIC_DIR), name='static'),
  ]
  app = Starlette(routes=routes,
                  exception_handlers={HTTPException: http_error, Exception: server_error})
  app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, timeout_s=body_timeout_s)
  app.add_middleware(SecurityHeadersMiddleware)
  app.state.results_token = token
  app.state.study = study
  app.state.store = db
  return app


def serve(study_dir: str | os.PathLike[str], host: str = '127.0.0.1', port: int = 8000, *,
          results_token: str | None = None, log_level: str = 'info') -> None:
  """Runs the study server until interrupted (Ctrl-C).

  Args:
    study_dir: a folder written by `study.build_study`.
    host: interface to listen on; the loopback default keeps it local.
    port: TCP port, 0..65535.
    results_token: secret for the results page; default: the study's (kept in the
      study folder, so the printed results URL stays the same across restarts).
    log_level: uvicorn's log level.

  Raises:
    study.StudyError: another process serves (or rebuilds) the study.
    ValueError: a port outside 0..65535.
    OSError: the address cannot be listened on (e.g. the port is in use); nothing is
      printed then.
  """
  import uvicorn  # Only needed to serve; importing this module starts nothing.

  if not 0 <= port <= 65535:
    raise ValueError(f'port must be in 0..65535, got {port}')
  # A wildcard address is no address to give participants: this machine's name is.
  everywhere = host in ('0.0.0.0', '::', '')
  shown = socket.gethostname() if everywhere else f'[{host}]' if ':' in host else host
  study_lib.load_study(study_dir)   # no study there: refused before the lock makes a folder
  # Held while serving: a rebuild of this study must not pull it from under the server.
  with study_lib.serving_lock(study_dir), _listening_socket(host, port) as sock:
    # Inside the lock: a second server is refused as such, never while the first is
    # still writing the study's results token (which it read back empty).
    app = create_app(study_dir, results_token=results_token)
    port = sock.getsockname()[1]   # the one the system chose for port 0
    print(f'Turing test: http://{shown}:{port}/  ({app.state.study.num_pairs} pairs)',
          flush=True)
    print(f'Results:     http://{shown}:{port}/results?token={app.state.results_token}',
          flush=True)
    if host not in ('127.0.0.1', 'localhost', '::1'):
      print(f'Note: listening on {host or "every interface"}, reachable from other machines'
            + (f' (by this machine\'s address if the name {shown} does not resolve there)'
               if everywhere else '') +
            '; use HTTPS in front of it for anything beyond a local network.')
    # Proxy headers are trusted from this machine only (uvicorn's default): an HTTPS
    # proxy in front says so, and the cookie is then marked Secure.
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            server_header=False, proxy_headers=True,
                            forwarded_allow_ips='127.0.0.1')
    logging.getLogger('uvicorn.access').addFilter(_RedactToken())   # after Config's setup
    uvicorn.Server(config).run(sockets=[sock])


def _listening_socket(host: str, port: int) -> socket.socket:
  """A TCP socket listening on (host, port), so that the URLs printed are ones that answer.

  Raises:
    OSError: naming the address, e.g. when the port is in use.
  """
  sock = None
  try:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)   # uvicorn's backlog: a participant connecting before it starts waits
  except OSError as e:
    if sock is not None:
      sock.close()
    raise OSError(e.errno, f'cannot listen on {host}:{port}: {e.strerror or e}') from e
  return sock
