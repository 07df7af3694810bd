"""Guards on the folders the tools read and write: that a folder is one, that files can
be made there, and that no other process is using one (a training's workdir, a served
Turing study)."""

import contextlib
import fcntl
import os
import tempfile
from typing import Iterator


class Busy(Exception):
  """Another process holds the lock."""


def check_folder(path: str | os.PathLike, what: str) -> None:
  """Checks that `path` is an existing folder (of photos to read, say).

  Raises:
    ValueError: it is a file (so not "not found": it is there).
    FileNotFoundError: nothing is there.
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f'{what} must be a folder; {os.fspath(path)!r} is a file.')
  if not os.path.isdir(path):
    raise FileNotFoundError(f'{what} not found: {os.fspath(path)!r}.')


def within(path: str, folder: str) -> bool:
  """Whether the path `path` is `folder` or lies inside it (both real or both as given:
  links are not resolved here)."""
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_writable(folder: str | os.PathLike, what: str) -> None:
  """Makes `folder` if missing and checks that files can be created in it.

  Called before the work whose results `what` would go there, not after.

  Raises:
    ValueError: naming `what`, the folder and why (a file in its place, no permission,
      a read-only file system, ...).
  """
  if os.path.exists(folder) and not os.path.isdir(folder):
    problem = 'it is a file, not a folder'
  else:
    try:
      os.makedirs(folder, exist_ok=True)
      with tempfile.TemporaryFile(dir=folder):
        problem = None
    except OSError as e:
      problem = e.strerror or str(e)
  if problem:
    raise ValueError(f'Cannot write {what} to {os.fspath(folder)}: {problem}.')


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
  """Holds an exclusive lock on the file `path` (made if missing) while in the block.

  The kernel drops it when the process ends, however it ends, so a killed process
  leaves nothing to clean up.

  Raises:
    Busy: another process holds it.
  """
  with open(path, 'a') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise Busy(os.fspath(path)) from None
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
