"""A run folder has one writer at a time, and a refused command leaves no folder behind.

* :func:`writer_lock`: held by the job that trains into a folder, for as long as it runs
  (an ``flock`` on ``<run folder>/.tinycvae.lock``, which the kernel releases when the
  process ends, even on ``kill -9``, so a later ``ckpt_path=last`` can take over). A
  second job aimed at the same folder is refused with one line before it writes anything.
* :func:`discard_if_unused`: Hydra makes a command's run folder (its ``.hydra/`` record
  and log) before the command checks its input; a command that refused its input
  removes that folder again when nothing else is in it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tinycvae.errors import ConfigError

LOCK_NAME = ".tinycvae.lock"
HYDRA_ONLY = (".hydra",)  # what Hydra writes into a run folder, besides its *.log
REFUSED_JOB = ("summary.json", LOCK_NAME)  # what a job refused on the way leaves besides


RUN_FOLDER = ("run folder", "job", "another folder (hydra.run.dir=...)")


def _in_use(run_dir: Path, holder: str, kind: tuple[str, str, str] = RUN_FOLDER) -> ConfigError:
    what, writer, other = kind
    return ConfigError(
        f"{what} {run_dir} is in use by a running {writer} (pid {holder}); allowed: {other}, "
        f"or wait for that {writer} to end"
    )


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False
    return True


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


def check_free(run_dir: Path) -> None:
    """:class:`ConfigError` when a running job holds ``run_dir`` (checked before any work;
    :func:`writer_lock` checks again as it takes the folder)."""
    path = run_dir / LOCK_NAME
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if not _try_lock(fd):
            raise _in_use(run_dir, _holder(fd))
    finally:
        os.close(fd)  # releases the probe's lock


@contextlib.contextmanager
def writer_lock(run_dir: Path, kind: tuple[str, str, str] = RUN_FOLDER) -> Iterator[None]:
    """Hold the folder's writer lock; :class:`ConfigError` when another process holds it.
    ``kind``: what the folder is, who writes it and where else to write, for that line
    (an export folder says ``export folder ... running export ... another out_dir=...``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            raise _in_use(run_dir, _holder(fd), kind)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def discard_if_unused(run_dir: Path, also: tuple[str, ...] = ()) -> bool:
    """Remove ``run_dir`` when it holds only what Hydra wrote for a refused command
    (``.hydra/`` and ``*.log``) and the names in ``also``, and its parents below the
    working directory that are left empty; never the working directory itself. True when
    removed."""
    try:
        run_dir = run_dir.resolve()
        if not run_dir.is_dir() or run_dir == Path.cwd().resolve():
            return False
        entries = list(run_dir.iterdir())
    except OSError:
        return False
    keep = (*HYDRA_ONLY, *also)
    if any(e.name not in keep and not (e.is_file() and e.suffix == ".log") for e in entries):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in run_dir.parents:  # logs/runs/, logs/ when they were made for it alone
        if parent == cwd or cwd not in parent.parents:
            break
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
    return True
