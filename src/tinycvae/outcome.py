"""How a job ends: the status it records in ``summary.json`` and the exit status a
scheduler sees.

One rule for exit statuses, used by every command (the numbers are
:mod:`tinycvae.errors`' ``EXIT_*``):

* ``0`` the job (every job of a sweep) finished ``ok``;
* ``1`` a job failed (its summary says why; its checkpoints are kept);
* ``2`` bad input, refused before any work (one ``error:`` line);
* ``128 + N`` the process was stopped by signal N: ``143`` for SIGTERM (SLURM pre-emption,
  ``timeout``, ``docker stop``), ``130`` for SIGINT (Ctrl+C), ``129`` for SIGHUP (a closed
  terminal, a dropped ssh), so that a requeue-on-failure policy fires and
  ``ckpt_path=last`` can resume the run. A sweep's parent passes SIGTERM / SIGHUP on to
  its jobs and exits the same way once they recorded it (:mod:`tinycvae.sweep_signals`).

:func:`recorded` wraps a job's work: whatever happens, the summary gets a final status,
the finish time, the total wall time and the checkpoints on disk, and W&B is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from tinycvae.disk import no_space
from tinycvae.errors import DiskFullError, NonFiniteLossError, TinyCVAEError
from tinycvae.sweep_signals import in_pool_worker

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
OUT_OF_MEMORY = tuple(
    t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t
)


def signal_exit_status(signum: int) -> int:
    return 128 + int(signum)


class Interrupted(BaseException):
    """The job received SIGTERM or SIGINT (a BaseException: nothing may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class MetricsStageError(Exception):
    """The quality metrics failed after training; the checkpoints are kept."""


def describe(err: BaseException) -> str:
    """An exception as one line for a summary: ``Type: first line`` (CUDA out-of-memory
    errors as ``CUDA out of memory …``)."""
    text = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, OUT_OF_MEMORY):
        return text if text.startswith("CUDA out of memory") else f"CUDA out of memory: {text}"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class SignalWatch:
    """Records SIGTERM / SIGHUP / SIGINT while a job runs.

    Outside Lightning's loops a signal raises :class:`Interrupted` at once. While a
    Trainer runs (``busy()`` is true), SIGTERM is only recorded: Lightning's own handler,
    which it chains with this one, stops the loop at the next batch boundary (a
    ``SIGTERMException``), so no checkpoint is cut in half; SIGHUP is recorded and then
    handed to Lightning as a SIGTERM to stop the same way. SIGINT keeps Python's meaning
    (KeyboardInterrupt), which Lightning also turns into a clean stop. A job stops on
    the first signal; later ones (a process group signalled, then its parent relaying)
    change nothing. A signal that came before the job started (a sweep's worker between
    jobs) is the job's from its start (:meth:`check`)."""

    def __init__(self) -> None:
        from tinycvae.sweep_signals import pending

        self.signum: int | None = pending()
        self.busy: Callable[[], bool] = lambda: False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        from tinycvae.sweep_signals import remember

        if signum == signal.SIGINT:
            self.signum = self.signum or signum
            raise KeyboardInterrupt
        if self.signum is not None:
            return  # already stopping: the first signal is the one recorded
        self.signum = signum
        remember(signum)  # a sweep worker's next jobs start interrupted
        if not self.busy():
            raise Interrupted(signum)
        if signum != signal.SIGTERM:  # Lightning stops its loop on SIGTERM only
            os.kill(os.getpid(), signal.SIGTERM)

    def check(self) -> None:
        """Raise :class:`Interrupted` when a signal already came (before the job); called
        first thing inside :func:`recorded`."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __enter__(self) -> SignalWatch:
        for sig in HANDLED_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: the launcher's process handles it
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _interrupt_status(err: BaseException, watch: SignalWatch) -> int | None:
    """The signal that ended the job, or None when ``err`` is not an interruption."""
    if isinstance(err, Interrupted):
        return err.signum
    if isinstance(err, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(err, SystemExit):  # Lightning stops on SIGTERM / Ctrl+C with SystemExit
        return watch.signum if watch.signum is not None else signal.SIGTERM
    return None


@contextlib.contextmanager
def recorded(
    summary, watch: SignalWatch, name: str, final_fields: Callable[[], dict[str, Any]]
) -> Iterator[None]:
    """Run a job's work and record its outcome in ``summary`` (a RunSummary).

    The work sets ``status="ok"`` itself when it gets there. A failure is recorded and
    swallowed (the sweep's other jobs go on), except bad input found on the way
    (re-raised: exit 2) and a signal (re-raised as ``SystemExit(128 + N)``); a full disk
    is one line naming the folder and what was kept. Last, W&B is closed and the summary
    is written once with the final status, the finish time, the wall time and
    ``final_fields()`` (e.g. the checkpoints on disk)."""
    start = time.perf_counter()
    try:
        yield
    except MetricsStageError as err:
        log.exception("job %s failed in the metrics stage", name)
        summary.data["status"] = f"failed: metrics: {err}"
    except NonFiniteLossError as err:
        log.error("%s: %s", name, err)
        summary.data.update(status="failed: non-finite loss", error=str(err))
    except TinyCVAEError as err:  # bad setup found on the way (e.g. missing data files)
        summary.data["status"] = f"failed: {err}"
        raise
    except (Interrupted, KeyboardInterrupt, SystemExit) as err:
        signum = _interrupt_status(err, watch)
        summary.data["status"] = f"failed: interrupted ({signal.Signals(signum).name})"
        if not in_pool_worker():  # a pool's parent sets the exit status (sweep_signals)
            raise SystemExit(signal_exit_status(signum)) from None
        log.error("job %s %s", name, summary.status)
    except Exception as err:  # noqa: BLE001 - record it; the sweep's other jobs go on
        if no_space(err):  # one line: the folder and what was kept, no traceback
            summary.data["status"] = f"failed: {_full_disk(err)}"
            log.error("job %s %s", name, summary.status)
        else:
            log.exception("job %s failed", name)
            summary.data["status"] = f"failed: {describe(err)}"
    finally:
        _close(summary, start, final_fields)


def _full_disk(err: OSError) -> str:
    if isinstance(err, DiskFullError):
        return str(err.strerror)
    return f"no space left on device ({describe(err)})"


def _close(summary, start: float, final_fields: Callable[[], dict[str, Any]]) -> None:
    """The end of every job: W&B closed, the final record written. When even that does
    not fit on the disk, the job is failed (in memory: its exit status says so)."""
    from tinycvae.devices import free_cached_memory
    from tinycvae.tracking import finish_wandb

    ok = summary.status == "ok"
    finish_wandb(ok=ok, status=summary.status)
    if not ok:
        free_cached_memory()  # the sweep's next job gets the GPU memory back
    try:
        summary.finish(time.perf_counter() - start, **final_fields())
    except DiskFullError as err:
        log.error("%s; the run's summary.json could not record how it ended", err.strerror)
        summary.data["status"] = f"failed: {err.strerror}; summary.json not updated"
