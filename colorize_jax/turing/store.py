"""Participants, placements and answers of a study, in SQLite (WAL mode).

Every write is one `BEGIN IMMEDIATE` transaction on its own connection, so any
number of threads or server processes can share a study folder; UNIQUE
constraints make a second answer to the same pair impossible, whatever the
timing. Nothing is kept in memory between calls: a restarted server sees all
earlier answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import random
import secrets
import sqlite3
from collections.abc import Iterator

from colorize_jax.turing import study as study_lib

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta(
         key TEXT PRIMARY KEY,
         value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS participants(
         id INTEGER PRIMARY KEY,
         token_sha256 TEXT NOT NULL UNIQUE,
         age_range TEXT NOT NULL,
         field_of_study TEXT NOT NULL,
         created_at TEXT NOT NULL)""",
    # A participant's pair order and sides, drawn once when they start.
    """CREATE TABLE IF NOT EXISTS placements(
         participant_id INTEGER NOT NULL REFERENCES participants(id),
         position INTEGER NOT NULL,
         pair_id TEXT NOT NULL,
         left_image TEXT NOT NULL,
         right_image TEXT NOT NULL,
         PRIMARY KEY(participant_id, position),
         UNIQUE(participant_id, pair_id))""",
    # UNIQUE(participant_id, pair_id): one answer per pair, whatever the timing.
    """CREATE TABLE IF NOT EXISTS answers(
         id INTEGER PRIMARY KEY,
         participant_id INTEGER NOT NULL,
         pair_id TEXT NOT NULL,
         chosen_image TEXT NOT NULL,
         chosen_side TEXT NOT NULL CHECK(chosen_side IN ('left', 'right')),
         fooled INTEGER NOT NULL CHECK(fooled IN (0, 1)),
         answered_at TEXT NOT NULL,
         UNIQUE(participant_id, pair_id),
         FOREIGN KEY(participant_id, pair_id)
           REFERENCES placements(participant_id, pair_id))""",
    """CREATE TRIGGER IF NOT EXISTS answers_are_final BEFORE UPDATE ON answers
       BEGIN SELECT RAISE(ABORT, 'answers cannot be changed'); END""",
    """CREATE TRIGGER IF NOT EXISTS answers_are_kept BEFORE DELETE ON answers
       BEGIN SELECT RAISE(ABORT, 'answers cannot be deleted'); END""",
    """CREATE TRIGGER IF NOT EXISTS placements_are_final BEFORE UPDATE ON placements
       BEGIN SELECT RAISE(ABORT, 'placements cannot be changed'); END""",
)


class UnknownParticipant(LookupError):
  """No participant has this token or id."""


class UnknownPair(LookupError):
  """The pair id is not part of the study."""


class InvalidChoice(ValueError):
  """The chosen image is not one of the pair's two images."""


class AlreadyAnswered(Exception):
  """The participant already answered this pair; the first answer stands."""


class NotShownYet(Exception):
  """The pair is not the one the participant is being shown: pairs are answered in order."""


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where a participant sees a pair: its position in their sequence and its sides."""
  position: int
  pair_id: str
  left_image: str
  right_image: str


@dataclasses.dataclass(frozen=True)
class Progress:
  """A participant's state.

  Attributes:
    participant_id: internal id (not the cookie token).
    answered: how many pairs they answered.
    fooled: on how many of those they picked the real image.
    num_pairs: pairs in the study.
    current: the first unanswered placement (the pair to show), or None when done.
  """
  participant_id: int
  answered: int
  fooled: int
  num_pairs: int
  current: Placement | None

  @property
  def done(self) -> bool:
    return self.current is None


def _current_placement(conn: sqlite3.Connection, participant_id: int) -> Placement | None:
  """The participant's first unanswered placement (the pair they are shown), or None."""
  row = conn.execute(
      'SELECT position, pair_id, left_image, right_image FROM placements p '
      'WHERE participant_id = ? AND NOT EXISTS (SELECT 1 FROM answers a WHERE '
      'a.participant_id = p.participant_id AND a.pair_id = p.pair_id) '
      'ORDER BY position LIMIT 1', (participant_id,)).fetchone()
  return Placement(*row) if row else None


@dataclasses.dataclass(frozen=True)
class AnswerRow:
  """One answer with its context, for reports and the CSV export."""
  answer_id: int
  participant_id: int
  age_range: str
  field_of_study: str
  position: int
  pair_id: str
  left_image: str
  right_image: str
  chosen_side: str
  chosen_image: str
  fooled: bool
  answered_at: str


@dataclasses.dataclass(frozen=True)
class ParticipantRow:
  """A participant's background and counts."""
  participant_id: int
  age_range: str
  field_of_study: str
  created_at: str
  answered: int
  fooled: int


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='milliseconds')


def _hash_token(token: str) -> str:
  # Only a hash is stored: a leaked database does not let anyone act as a participant.
  return hashlib.sha256(token.encode('utf-8', 'surrogatepass')).hexdigest()


class Store:
  """The responses database of one study (`<study_dir>/responses.sqlite`)."""

  def __init__(self, study: study_lib.Study, *, rng: random.Random | None = None):
    """Opens (creating if needed) the database and checks it belongs to `study`.

    Args:
      study: the study.
      rng: draws pair orders and sides for new participants; default
        `random.SystemRandom()` (unpredictable, not reproducible).

    Raises:
      study_lib.StudyError: the database cannot be opened (corrupt, read-only) or
        was made for another build of the study.
    """
    self.study = study
    self.path = study.db_path
    self._rng = rng or random.SystemRandom()
    try:
      conn = self._connect()
      try:
        conn.execute('PRAGMA journal_mode=WAL')
        with self._transaction(conn):
          for statement in _SCHEMA:
            conn.execute(statement)
          conn.execute('INSERT OR IGNORE INTO meta VALUES (?, ?)', ('study_id', study.study_id))
          (stored,) = conn.execute("SELECT value FROM meta WHERE key = 'study_id'").fetchone()
        # Damage past the pages read so far would otherwise surface later as a failed
        # answer for every participant (the server) or a traceback (the report).
        problems = [row[0] for row in conn.execute('PRAGMA quick_check(5)')]
      finally:
        conn.close()
    except sqlite3.Error as e:
      raise study_lib.StudyError(f'cannot open the responses database {self.path}: {e}') from None
    if problems != ['ok']:
      raise study_lib.StudyError(
          f'the responses database {self.path} is damaged ({"; ".join(problems)}). Keep a '
          'copy: `sqlite3 FILE .recover` may save most answers; then move it away to start '
          'the study afresh.')
    if stored != study.study_id:
      raise study_lib.StudyError(
          f'{self.path} holds answers to another build of the study '
          f'({stored} != {study.study_id}); move it away, or rebuild the study (`launch.py '
          'turing --rebuild`, turing.build_study(overwrite=True)), which moves it aside')

  def _connect(self) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
    conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
    conn.execute('PRAGMA foreign_keys = ON')
    conn.execute('PRAGMA synchronous = FULL')
    return conn

  @staticmethod
  @contextlib.contextmanager
  def _transaction(conn: sqlite3.Connection, mode: str = 'IMMEDIATE') -> Iterator[None]:
    conn.execute(f'BEGIN {mode}')
    try:
      yield
    except BaseException:
      conn.execute('ROLLBACK')
      raise
    conn.execute('COMMIT')

  @contextlib.contextmanager
  def _write(self) -> Iterator[sqlite3.Connection]:
    conn = self._connect()
    try:
      with self._transaction(conn):
        yield conn
    finally:
      conn.close()

  @contextlib.contextmanager
  def _read(self) -> Iterator[sqlite3.Connection]:
    # One deferred transaction: all SELECTs see the same snapshot.
    conn = self._connect()
    try:
      with self._transaction(conn, 'DEFERRED'):
        yield conn
    finally:
      conn.close()

  def create_participant(self, age_range: str = '', field_of_study: str = '') -> str:
    """Adds a participant with a random pair order and balanced random sides.

    Each participant sees every pair once, in their own random order; the real
    image is on the left in exactly half of their pairs (one more or less for
    an odd count), on randomly chosen pairs.

    Args:
      age_range: optional background answer ('' when not given).
      field_of_study: optional background answer ('' when not given).

    Returns:
      The participant's secret token (for the cookie); only its hash is stored.
    """
    pairs = list(self.study.pairs)
    self._rng.shuffle(pairs)
    n = len(pairs)
    real_left = set(self._rng.sample(range(n), (n + self._rng.randrange(2)) // 2))
    token = secrets.token_urlsafe(32)
    with self._write() as conn:
      cur = conn.execute(
          'INSERT INTO participants(token_sha256, age_range, field_of_study, created_at) '
          'VALUES (?, ?, ?, ?)', (_hash_token(token), age_range, field_of_study, _now()))
      pid = cur.lastrowid
      rows = []
      for position, pair in enumerate(pairs):
        gen = pair.generated_image
        left, right = (pair.real_image, gen) if position in real_left else (gen, pair.real_image)
        rows.append((pid, position, pair.pair_id, left, right))
      conn.executemany('INSERT INTO placements VALUES (?, ?, ?, ?, ?)', rows)
    return token

  def participant_id(self, token: str | None) -> int | None:
    """Returns the participant id for a cookie token, or None if unknown."""
    if not token or len(token) > 128:
      return None
    with self._read() as conn:
      row = conn.execute('SELECT id FROM participants WHERE token_sha256 = ?',
                         (_hash_token(token),)).fetchone()
    return row[0] if row else None

  def progress(self, participant_id: int) -> Progress:
    """Returns how far a participant got and their next pair.

    Raises:
      UnknownParticipant: no such participant.
    """
    with self._read() as conn:
      if not conn.execute('SELECT 1 FROM participants WHERE id = ?',
                          (participant_id,)).fetchone():
        raise UnknownParticipant(participant_id)
      answered, fooled = conn.execute(
          'SELECT COUNT(*), COALESCE(SUM(fooled), 0) FROM answers WHERE participant_id = ?',
          (participant_id,)).fetchone()
      current = _current_placement(conn, participant_id)
    return Progress(participant_id, answered, fooled, self.study.num_pairs, current)

  def record_answer(self, participant_id: int, pair_id: str, chosen_image: str) -> bool:
    """Stores a participant's pick on a pair; the first answer is final.

    Args:
      participant_id: the participant.
      pair_id: one of the study's pair ids.
      chosen_image: the image file name they picked as generated.

    Returns:
      True if they were fooled (picked the real image).

    Raises:
      UnknownParticipant, UnknownPair, InvalidChoice, AlreadyAnswered, and NotShownYet
      for a pair after the one the participant is being shown (an answer to a pair
      nobody showed them would count as if they had seen it).
    """
    pair = self.study.pair(pair_id)
    if pair is None:
      raise UnknownPair(pair_id)
    with self._write() as conn:
      placement = conn.execute(
          'SELECT left_image, right_image FROM placements '
          'WHERE participant_id = ? AND pair_id = ?', (participant_id, pair_id)).fetchone()
      if placement is None:
        if not conn.execute('SELECT 1 FROM participants WHERE id = ?',
                            (participant_id,)).fetchone():
          raise UnknownParticipant(participant_id)
        raise UnknownPair(pair_id)
      if chosen_image not in placement:
        raise InvalidChoice(chosen_image)
      side = 'left' if chosen_image == placement[0] else 'right'
      fooled = chosen_image == pair.real_image
      shown = _current_placement(conn, participant_id)
      answered = conn.execute('SELECT 1 FROM answers WHERE participant_id = ? AND pair_id = ?',
                              (participant_id, pair_id)).fetchone()
      if not answered and (shown is None or shown.pair_id != pair_id):
        raise NotShownYet(pair_id)
      try:
        conn.execute(
            'INSERT INTO answers(participant_id, pair_id, chosen_image, chosen_side, '
            'fooled, answered_at) VALUES (?, ?, ?, ?, ?, ?)',
            (participant_id, pair_id, chosen_image, side, int(fooled), _now()))
      except sqlite3.IntegrityError:
        raise AlreadyAnswered(pair_id) from None
    return fooled

  def answers(self) -> list[AnswerRow]:
    """All stored answers with their context, in the order they were given."""
    with self._read() as conn:
      rows = conn.execute(
          'SELECT a.id, a.participant_id, p.age_range, p.field_of_study, pl.position, '
          'a.pair_id, pl.left_image, pl.right_image, a.chosen_side, a.chosen_image, '
          'a.fooled, a.answered_at FROM answers a '
          'JOIN participants p ON p.id = a.participant_id '
          'JOIN placements pl ON pl.participant_id = a.participant_id '
          'AND pl.pair_id = a.pair_id ORDER BY a.id').fetchall()
    return [AnswerRow(*r[:10], bool(r[10]), r[11]) for r in rows]

  def participants(self) -> list[ParticipantRow]:
    """All participants (with or without answers), by id."""
    with self._read() as conn:
      rows = conn.execute(
          'SELECT p.id, p.age_range, p.field_of_study, p.created_at, COUNT(a.id), '
          'COALESCE(SUM(a.fooled), 0) FROM participants p '
          'LEFT JOIN answers a ON a.participant_id = p.id '
          'GROUP BY p.id ORDER BY p.id').fetchall()
    return [ParticipantRow(*r) for r in rows]

  def placements(self, participant_id: int) -> list[Placement]:
    """A participant's placements in the order they see them."""
    with self._read() as conn:
      rows = conn.execute(
          'SELECT position, pair_id, left_image, right_image FROM placements '
          'WHERE participant_id = ? ORDER BY position', (participant_id,)).fetchall()
    return [Placement(*r) for r in rows]
