"""Files derived from data and kept for later runs (rendered dice, trained evaluators).

One loader for all of them, :func:`load_or_build`:

* a cache file is read and checked; one that cannot be read (truncated, corrupt, for
  other data) is rebuilt and replaced, with a one-line warning naming the file;
* it is written atomically (temporary file + rename), so a reader never sees half a file,
  and the temporary file of a writer killed mid-write is removed by the next reader;
* builders of the same file take turns (a lock file beside it): parallel jobs of a sweep
  build it once, and the others read what the first wrote.
"""

from __future__ import annotations

import fcntl
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tinycvae.disk import remove_stale_temps, save_torch

T = TypeVar("T")


class CacheWarning(UserWarning):
    """A cache file was unreadable and has been rebuilt."""


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing), released on exit or death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def save_atomic(blob: object, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and a rename (see
    :func:`tinycvae.disk.write_atomic`)."""
    save_torch(blob, path)


def load_or_build(
    path: Path,
    read: Callable[[Path], T],
    build: Callable[[], tuple[T, object]],
    what: str,
) -> T:
    """The value cached at ``path``.

    ``read(path)`` returns the value or raises on any defect; ``build()`` returns the value
    and the blob to save. A missing file is built; an unreadable one is rebuilt, with a
    :class:`CacheWarning` that names it and what is done (``what``: e.g. "re-rendering")."""
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock")):
        remove_stale_temps(path)
        if path.exists():
            try:
                return read(path)
            except Exception as err:  # noqa: BLE001 - any defect: rebuild, never trust
                reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
                warnings.warn(
                    f"cache {path} is unreadable ({reason}); {what} it", CacheWarning, stacklevel=2
                )
        value, blob = build()
        save_atomic(blob, path)
        return value
