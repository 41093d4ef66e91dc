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


@contextlib.contextmanager
def writer_lock(run_dir: Path) -> Iterator[None]:
    """Hold the folder's writer lock; :class:`ConfigError` when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(
                f"run folder {run_dir} is in use by a running job (pid {holder}); allowed: "
                "another folder (hydra.run.dir=...), or wait for that job to end"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def discard_if_unused(run_dir: Path) -> bool:
    """Remove ``run_dir`` when it holds only what Hydra wrote for a refused command
    (``.hydra/`` and ``*.log``); never the working directory. True when removed."""
    try:
        run_dir = run_dir.resolve()
        if not run_dir.is_dir() or run_dir == Path.cwd().resolve():
            return False
        entries = list(run_dir.iterdir())
    except OSError:
        return False
    if any(e.name not in HYDRA_ONLY and not (e.is_file() and e.suffix == ".log") for e in entries):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True
