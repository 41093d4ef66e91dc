"""An export folder (``out_dir``) has one writer at a time, and an export leaves in it
only the finished model (``<out_dir>/model``) and the folder's lock.

* :func:`check_out_dir` (before any work): the folder can be written, its path is one
  make can build in (no spaces or make's special characters), and a previous
  ``<out_dir>/model`` can be replaced (not read-only).
* :func:`export_folder`: holds the folder's writer lock (the run folder's
  :func:`~tinycvae.run_folder.writer_lock`: an ``flock`` on ``<out_dir>/.tinycvae.lock``,
  released by the kernel when the process ends) for the whole export, so a second export
  into the same folder is refused in one line before it does any work; removes the
  ``.export-*`` scratch folders that killed exports left (an export killed while it
  swapped folders gets its previous model put back first); yields a fresh scratch
  folder and removes it at the end; a failed export removes the folders it made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tinycvae.checks import require_writable_dir
from tinycvae.errors import ConfigError
from tinycvae.run_folder import LOCK_NAME, writer_lock

log = logging.getLogger(__name__)

SCRATCH_PREFIX = ".export-"
EXPORT_FOLDER = ("export folder", "export", "another out_dir=...")
# make splits words on whitespace and gives most punctuation a meaning of its own ($ # :
# ; % * ? and the comma and parentheses of $(call ...)): a path of these builds
MAKE_UNSAFE = re.compile(r"[^\w\-./+@~]")


def check_out_dir(value: object) -> Path:
    """``out_dir`` resolved; a one-line ConfigError when it cannot be written, when make
    could not build in it, or when its ``model`` folder cannot be replaced."""
    require_writable_dir(value, "out_dir")
    out_dir = Path(str(value)).resolve()
    bad = MAKE_UNSAFE.search(str(out_dir))
    if bad:
        raise ConfigError(
            f"out_dir={value} ({out_dir}) holds {bad.group()!r}, which make cannot take in a "
            "path (the firmware is built there); allowed: a folder path of letters, digits "
            "and - _ . / + @ ~"
        )
    final = out_dir / "model"
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise ConfigError(
            f"out_dir={value}: {final} is not a folder an export wrote; allowed: an out_dir "
            "whose model/ is a folder, or absent"
        )
    if final.exists() and not os.access(final, os.W_OK | os.X_OK):
        raise ConfigError(
            f"out_dir={value}: {final} is read-only, so the new export could not replace it; "
            f"allowed: make it writable (chmod -R u+w {final}), or another out_dir=..."
        )
    return out_dir


def _missing(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    out = []
    while not folder.exists():
        out.append(folder)
        folder = folder.parent
    return out


def recover_scratch(out_dir: Path) -> None:
    """Remove the ``.export-*`` scratch folders of killed exports (call with the folder's
    lock held: no live export owns them). One killed between its two renames holds the
    previous model as ``previous``: it goes back to ``model`` first."""
    final = out_dir / "model"
    for scratch in sorted(out_dir.glob(f"{SCRATCH_PREFIX}*")):
        if not scratch.is_dir() or scratch.is_symlink():
            continue
        previous = scratch / "previous"
        if previous.is_dir() and not final.exists():
            os.replace(previous, final)
            log.warning("put back %s, left in %s by an export killed while it swapped", final,
                        scratch)  # fmt: skip
        shutil.rmtree(scratch, ignore_errors=True)
        log.info("removed %s, left by a killed export", scratch)


@contextlib.contextmanager
def export_folder(out_dir: Path) -> Iterator[Path]:
    """Hold ``out_dir``'s writer lock and yield a fresh scratch folder inside it (see the
    module doc); the scratch is removed at the end, and a failed export removes the
    folders it made when nothing but the lock is in them."""
    made = _missing(out_dir)
    locked = done = False
    try:
        with writer_lock(out_dir, EXPORT_FOLDER):
            locked = True
            recover_scratch(out_dir)
            scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=out_dir))
            try:
                yield scratch
                done = True
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    finally:
        if locked and not done:
            _remove_made(made)


def _remove_made(made: list[Path]) -> None:
    """Remove the folders an export made (deepest first) while they hold nothing but the
    folder's lock."""
    for folder in made:
        try:
            if any(p.name != LOCK_NAME for p in folder.iterdir()):
                return
            (folder / LOCK_NAME).unlink(missing_ok=True)
            folder.rmdir()
        except OSError:
            return
