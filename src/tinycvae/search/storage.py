"""Where an Optuna study lives: one string -> an Optuna storage, checked before any trial.

Accepted values (``hydra.sweeper.storage`` and ``src/pareto.py --optuna-storage``):

* ``auto``: a journal file at ``<paths.log_dir>/searches/<study name>/study.journal`` for a
  named study (the same place every run, so running the search again resumes it); an
  unnamed study stays in memory.
* ``null`` / ``memory``: in memory only (nothing survives the process).
* a URL with a scheme: a database through SQLAlchemy (``sqlite:///logs/x.db``,
  ``postgresql://user:pw@host/db``, ``mysql+pymysql://...``), or ``redis://host:6379/0``
  (Optuna's journal on Redis).
* anything else: a journal file path (Optuna's ``JournalFileBackend``: no database server,
  safe for several processes and for NFS).

Killed workers: the database storages record Optuna's heartbeat natively; the journal
storages get the same ``BaseHeartbeat`` interface here (the last beat is a trial system
attribute), so ``optuna.storages.fail_stale_trials`` and
``RetryHeartbeatStaleTrialCallback`` work the same on every storage.
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from tinycvae.errors import ConfigError
from tinycvae.search import journal

AUTO = "auto"
MEMORY = ("memory", "none", "null", "")
JOURNAL_NAME = "study.journal"
HEARTBEAT_ATTR = "tinycvae:heartbeat"  # unix time of a journal trial's last beat
ALLOWED = (
    "auto (a journal file under logs/searches/<study>/), a journal file path, "
    "sqlite:///<file>.db, a database URL SQLAlchemy can open (postgresql://..., "
    "mysql+pymysql://...), redis://<host>:<port>/<db>, or null (in memory)"
)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's experimental-feature and ask-and-tell heartbeat warnings: the
    heartbeat is driven here (around launched jobs), not by ``Study.optimize``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*Heartbeat of storage.*")
        warnings.filterwarnings("ignore", message=".*heartbeat.*experimental.*")
        yield


@dataclass
class Storage:
    """An opened storage: the Optuna object (None: in memory), what it is, and the file
    it lives in (journal or SQLite; None otherwise)."""

    optuna: Any
    kind: str  # memory | journal | sqlite | database | redis
    spec: str
    path: Path | None = None

    def describe(self) -> str:
        if self.kind == "memory":
            return "in memory (not resumable)"
        return f"{self.kind} {self.path if self.path is not None else redact(self.spec)}"


def redact(url: str) -> str:
    """A database URL with its password hidden (for messages and logs)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL: mask what looks like one
        return _PASSWORD.sub(r"\1***\3", url)


# scheme://[user]:<password>@host: the password is group 2
_PASSWORD = re.compile(r"(://[^/@:\s]*:)([^@\s]+)(@)")


def scrub(text: str, spec: str) -> str:
    """``text`` (a driver's or server's error message) with ``spec``'s password, and any
    URL password in it, hidden."""
    from urllib.parse import unquote

    text = _PASSWORD.sub(r"\1***\3", text)
    found = _PASSWORD.search(spec)
    if found:
        for secret in {found.group(2), unquote(found.group(2))}:
            text = text.replace(secret, "***")
    return text


def resolve_spec(spec: Any, study_name: str | None, log_dir: str | Path | None) -> str:
    """``auto`` -> the default journal path of a named study (``memory`` when unnamed)."""
    spec = "memory" if spec is None else str(spec).strip()
    if spec.lower() == AUTO:
        if not study_name:
            return "memory"
        if log_dir is None:
            raise ConfigError("hydra.sweeper.storage=auto needs paths.log_dir")
        return str(Path(log_dir) / "searches" / study_name / JOURNAL_NAME)
    return spec


def storage_file(spec: str) -> Path | None:
    """The file a resolved journal or SQLite spec names (None for servers and memory)."""
    if spec.lower() in MEMORY:
        return None
    if "://" not in spec:
        return Path(spec).expanduser()
    if spec.lower().startswith("sqlite:///") and spec[len("sqlite:///") :] not in ("", ":memory:"):
        return Path(spec[len("sqlite:///") :]).expanduser()
    return None


def open_storage(
    spec: Any,
    *,
    study_name: str | None = None,
    log_dir: str | Path | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_callback: Callable | None = None,
    create: bool = True,
    key: str = "hydra.sweeper.storage",
) -> Storage:
    """Open (with ``create``: create if missing) the storage ``spec`` names.

    ConfigError (one line naming the value and what is allowed) when it is malformed,
    unreachable, or (without ``create``) missing."""
    spec = resolve_spec(spec, study_name, log_dir)
    if spec.lower() in MEMORY:
        if not create:
            raise ConfigError(f"{key}={spec}: memory holds no stored study; allowed: {ALLOWED}")
        return Storage(None, "memory", spec)
    beat = {
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        "stale_callback": stale_callback,
    }
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme in ("redis", "rediss", "unix"):
            return _open_redis(spec, key, beat)
        return _open_rdb(spec, scheme, key, create, beat)
    return _open_journal(Path(spec).expanduser(), spec, key, create, beat)


def _open_journal(path: Path, spec: str, key: str, create: bool, beat: dict) -> Storage:
    from optuna.storages.journal import JournalFileBackend

    if path.is_dir():
        raise ConfigError(f"{key}={spec} is a folder; allowed: {ALLOWED}")
    if path.is_file():
        with path.open("rb") as fh:
            head = fh.read(16)
        if head.startswith(b"SQLite format 3"):
            raise ConfigError(
                f"{key}={spec} is an SQLite database, not a journal file; "
                f"allowed: sqlite:///{path} for this file, or {ALLOWED}"
            )
    elif not create:
        raise ConfigError(f"{key}={spec}: no such journal file; allowed: {ALLOWED}")
    try:
        complete = None
        if path.is_file() and create:  # a search writes: never after a broken line
            journal.repair(path, key, spec, ALLOWED)
        elif path.is_file():  # a reader leaves the file as it is
            complete = journal.read_complete(path, key, spec, ALLOWED)
        path.parent.mkdir(parents=True, exist_ok=True)
        if complete is None:
            backend = JournalFileBackend(str(path))
        else:
            backend = journal.CompleteRecords(complete)
        storage = HeartbeatJournalStorage(backend, **beat)
    except OSError as err:
        raise ConfigError(f"{key}={spec}: cannot open the journal file ({err.strerror})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{key}={spec} is not an Optuna journal ({_first_line(err)}); allowed: {ALLOWED}"
        ) from None
    return Storage(storage, "journal", spec, path)


def _open_redis(spec: str, key: str, beat: dict) -> Storage:
    try:
        from optuna.storages.journal import JournalRedisBackend

        with quiet_optuna():
            backend = JournalRedisBackend(spec)
            storage = HeartbeatJournalStorage(backend, **beat)
            storage.get_all_studies()  # a wrong password fails here, not at the first trial
    except ImportError as err:
        raise ConfigError(
            f"{key}={redact(spec)} needs the redis driver ({err}); "
            "pip install 'tinycvae[redis]' (or: pip install redis)"
        ) from None
    except Exception as err:  # noqa: BLE001 - redis raises its own connection errors
        raise ConfigError(
            f"{key}={redact(spec)} cannot be opened ({type(err).__name__}: "
            f"{scrub(_first_line(err), spec)}); check the server, the user and the password"
        ) from None
    return Storage(storage, "redis", spec)


def _open_rdb(spec: str, scheme: str, key: str, create: bool, beat: dict) -> Storage:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = redact(spec)
    try:
        url = make_url(spec)
    except ArgumentError as err:
        raise ConfigError(
            f"{key}={shown} is not a URL ({scrub(_first_line(err), spec)}); allowed: {ALLOWED}"
        ) from None
    path = None
    engine_kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigError(
                f"{key}={shown}: an SQLite storage needs a file (sqlite:///<file>.db); "
                f"allowed: {ALLOWED}"
            )
        path = Path(url.database).expanduser()
        if path.is_dir():
            raise ConfigError(f"{key}={shown} names a folder; allowed: {ALLOWED}")
        if not path.exists():
            if not create:
                raise ConfigError(f"{key}={shown}: no such database file; allowed: {ALLOWED}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ConfigError(
                    f"{key}={shown}: cannot create its folder ({err.strerror})"
                ) from None
        # Several workers on one SQLite file: wait for the write lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.get_backend_name() in ("postgresql", "mysql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs}
    if beat["heartbeat_interval"]:
        kwargs.update(
            heartbeat_interval=beat["heartbeat_interval"],
            grace_period=beat["grace_period"],
            heartbeat_stale_trial_callback=beat["stale_callback"],
        )
    try:
        storage = _rdb_storage(spec, kwargs)
    except ImportError as err:
        raise ConfigError(
            f"{key}={shown}: the database driver is not installed ({_first_line(err)}); "
            "install it (PostgreSQL: pip install 'tinycvae[postgres]', i.e. psycopg; MySQL: "
            "pip install pymysql)"
        ) from None
    except Exception as err:  # noqa: BLE001 - SQLAlchemy/driver errors: unreachable, bad URL
        raise ConfigError(
            f"{key}={shown} cannot be opened ({type(err).__name__}: "
            f"{scrub(_first_line(err), spec)}); allowed: {ALLOWED}"
        ) from None
    return Storage(storage, "sqlite" if path is not None else "database", spec, path)


def _rdb_storage(spec: str, kwargs: dict[str, Any], tries: int = 5) -> Any:
    """RDBStorage; workers that start together on a new database race to create its
    tables (IntegrityError / "already exists"): the losers try again."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(tries):
        try:
            with quiet_optuna():
                return optuna.storages.RDBStorage(spec, **kwargs)
        except (IntegrityError, OperationalError) as err:
            text = str(err).lower()
            racing = isinstance(err, IntegrityError) or "already exists" in text or "locked" in text
            if not racing or attempt == tries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with Optuna's heartbeat interface: the last beat is the
    trial system attribute ``tinycvae:heartbeat``; a RUNNING trial whose last beat (or
    start) is older than ``grace_period`` is stale for ``fail_stale_trials``."""

    def __init__(
        self,
        backend: Any,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        stale_callback: Callable | None = None,
    ) -> None:
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self._heartbeat_interval is not None
        grace = self._grace_period or 2 * self._heartbeat_interval
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = t.datetime_start.timestamp() if t.datetime_start else 0.0
            last = max(float(t.system_attrs.get(HEARTBEAT_ATTR) or 0.0), started)
            if now - last > grace:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable | None:
        return self._stale_callback

    def get_failed_trial_callback(self) -> Callable | None:  # the name before Optuna 4.9
        return self._stale_callback
