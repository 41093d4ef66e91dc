"""Files a run writes are written whole or not at all, and a full disk is one line.

* :func:`write_atomic`: a temporary file in the target's folder, ``fsync``, then a
  rename over the target; on any failure the temporary file is removed (giving its space
  back) and the target keeps what it held. No space left (``ENOSPC``, ``EDQUOT``) is a
  :class:`~tinycvae.errors.DiskFullError` naming the folder and what was kept.
* :class:`AtomicCheckpointIO`: Lightning's checkpoint writer through :func:`write_atomic`
  (Lightning's own copies a temporary file from ``/tmp`` over the target, which a full
  disk leaves half-written under its final name).
* :class:`LogFileHandler`: the run's log file (Hydra's ``<job>.log``); when the disk is
  full it says so once and the log goes on on the console, instead of a traceback for
  every log line.
"""

from __future__ import annotations

import errno
import glob
import io
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from tinycvae.errors import DiskFullError

FULL = (errno.ENOSPC, errno.EDQUOT)


def no_space(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in FULL


def disk_full(path: Path) -> DiskFullError:
    names = sorted(
        p.name for p in path.parent.glob(f"*{path.suffix}") if p.is_file() and p.name[0] != "."
    )
    kept = ", ".join(f"the previous {n}" if n == path.name else n for n in names)
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on device in {path.parent}: {path.name} not written "
        f"(kept there: {kept or f'no {path.suffix} file'})",
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the ``.<name>.<pid>.tmp`` files of ``path`` that writers which died mid-write
    (``kill -9``, a lost node) left: their pid is no live process. Those of live writers
    stay. The removed paths."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(file)`` into ``path`` whole or not at all (temp file + rename); first away
    with the temporary files that dead writers of ``path`` left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if no_space(err):
            tmp.unlink(missing_ok=True)
            raise disk_full(path) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def overwrite_in_place(path: Path, data: bytes) -> bool:
    """Rewrite ``path`` with ``data`` in the blocks it already holds (no new space needed);
    False, with the file untouched, when ``data`` does not fit in them."""
    try:
        held = os.stat(path).st_blocks * 512
    except OSError:
        return False
    if len(data) > held:
        return False
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate(len(data))
        fh.flush()
        os.fsync(fh.fileno())
    return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint writer, whole or not at all."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        save_torch(checkpoint, Path(path))


def save_torch(blob: object, path: Path) -> None:
    """``torch.save`` into ``path`` whole or not at all: serialised in memory first (torch's
    own writer turns a failed write into a RuntimeError), then :func:`write_atomic`."""
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    write_atomic(path, lambda fh: fh.write(buffer.getbuffer()))


class LogFileHandler(logging.FileHandler):
    """A log file that, on a full disk, warns once and stops writing (the console goes on)."""

    full = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.full:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        err = sys.exc_info()[1]
        if err is None or not no_space(err):
            super().handleError(record)
            return
        self.full = True
        print(
            f"warning: no space left on device for the log {self.baseFilename}; the log "
            "goes on on the console only",
            file=sys.stderr,
            flush=True,
        )
