"""SIGTERM / SIGHUP to a sweep's parent process: passed on to its jobs, recorded by each,
and no process left behind.

A sweep through a process pool (``hydra/launcher=local_parallel``: joblib's loky
workers) runs its jobs in other processes than the one a scheduler signals (``timeout``,
``docker stop``, a closed terminal). The parent (:func:`relay_signals`, from the sweep's
``on_multirun_start``):

* passes SIGTERM / SIGHUP on to its worker processes and keeps waiting for them: each
  running job stops at a batch boundary and records ``failed: interrupted (SIGTERM)``,
  a job not yet started records the same at once, and none of them leaves the pool (a
  job that raised would make joblib kill the others while they record);
* then shuts the pool down (idle workers, and with them their W&B services, end) and
  exits ``128 + N`` (:func:`stop_if_signalled`).

A signal to the whole process group (SLURM's way) reaches the jobs twice; each job
records the first. In-process sweeps (``hydra/launcher=basic``) and single runs handle
the signal in the job itself (:class:`tinycvae.outcome.SignalWatch`).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

RELAYED = (signal.SIGTERM, signal.SIGHUP)
PARENT_ENV = "TINYCVAE_SWEEP_PARENT"  # the pid of a sweep that relays signals to its pool
MARKER_ENV = "TINYCVAE_SWEEP_SIGNAL"  # the file where that parent notes a relayed signal
MARKER_NAME = ".tinycvae-signal"

_pending: int | None = None  # the first relayed signal this process received


def pending() -> int | None:
    """The signal this process received outside a job, or that its sweep's parent
    relayed (noted in the marker file: a worker still starting up is not signalled)."""
    if _pending is None and in_pool_worker():
        try:
            return int(Path(os.environ[MARKER_ENV]).read_text())
        except (KeyError, OSError, ValueError):
            return None
    return _pending


def in_pool_worker() -> bool:
    """True in a worker process of a sweep whose parent relays signals: a job here
    records a signal and returns, and the parent sets the exit status."""
    parent = os.environ.get(PARENT_ENV)
    return parent is not None and parent != str(os.getpid())


def remember(signum: int) -> None:
    """Keep the first signal this process received (the jobs it starts later record it)."""
    global _pending
    if _pending is None:
        _pending = signum


def _remember(signum: int, frame) -> None:
    remember(signum)


def remember_signals() -> None:
    """In a pool worker, between jobs: a relayed signal is remembered (the next job
    records it at once) instead of killing the worker, which would break the pool."""
    for sig in RELAYED:
        if signal.getsignal(sig) is not _remember:
            signal.signal(sig, _remember)


def _catchers(signum: int) -> list[int]:
    """This process's children that catch ``signum`` (a job's handler is installed:
    workers still starting up would die of it, and read the marker instead; loky's
    resource trackers catch nothing). Linux ``/proc``."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != me:
            continue
        caught = next(
            (ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), "0"
        )
        if int(caught, 16) >> (signum - 1) & 1:
            found.append(int(entry.name))
    return found


def _relay(signum: int, frame) -> None:
    first = _pending is None
    _remember(signum, frame)
    if not first:
        return
    name = signal.Signals(signum).name
    print(
        f"sweep: {name} received; passed on to its jobs, waiting for them to record it",
        file=sys.stderr,
        flush=True,
    )
    marker = os.environ.get(MARKER_ENV)
    if marker:  # first the note, then the signal: a job starting meanwhile reads the note
        try:
            Path(marker).parent.mkdir(parents=True, exist_ok=True)
            Path(marker).write_text(str(int(signum)))
        except OSError as err:
            print(f"warning: {marker}: {err.strerror}", file=sys.stderr, flush=True)
    for pid in _catchers(signum):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def relay_signals(pool: bool, sweep_dir: Path) -> None:
    """In a sweep's parent: SIGTERM / SIGHUP are passed on to the jobs (``pool``: the jobs
    run in worker processes, which learn here that their parent relays signals)."""
    if pool:
        os.environ[PARENT_ENV] = str(os.getpid())
        os.environ[MARKER_ENV] = str(Path(sweep_dir).resolve() / MARKER_NAME)
    for sig in RELAYED:
        signal.signal(sig, _relay)


def shutdown_pool() -> None:
    """End joblib's idle loky workers now (not after their idle timeout of minutes); each
    exits cleanly, closing its W&B service."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)
        reusable_executor._executor = None


def stop_if_signalled() -> None:
    """After a sweep's jobs returned: when a signal came, end the pool and exit 128 + N."""
    if _pending is None:
        return
    shutdown_pool()
    if os.environ.get(MARKER_ENV):
        Path(os.environ[MARKER_ENV]).unlink(missing_ok=True)
    print(
        f"sweep stopped by {signal.Signals(_pending).name}: every started job recorded it",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(128 + int(_pending))
