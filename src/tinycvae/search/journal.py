"""An Optuna journal file cut mid-line (a full disk, a killed writer, an NFS hiccup).

Optuna's ``JournalFileBackend`` appends one JSON record per line and replays the lines
in order. A line cut short breaks it twice: the next append lands on the cut line (the
record appended there is lost to every reader, and the replay fails with an
``AttributeError``), and once anything follows a broken line every read fails with a
``JSONDecodeError``. Here a journal is checked before Optuna opens it:

* every complete record stays readable: broken lines are dropped, and a complete
  record that an earlier append left at the end of a broken line is recovered;
* what was dropped is said in one ``warning:`` line, and its bytes are kept beside the
  journal (``<journal>.dropped-<UTC time>``): nothing a user produced is lost;
* a search (which writes) repairs the file under Optuna's own journal lock before its
  first append, so nothing is ever appended to a broken line; a reader (``src/pareto.py
  --optuna-storage``) leaves the file as it is and reads the complete records.

A file whose first line is not a journal record is not a journal: it is refused, and
never rewritten.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend

from tinycvae.errors import ConfigError

RECORD_START = b'{"op_code":'
CUT = "the journal was cut mid-record (a full disk or a killed writer?)"


def _record(line: bytes) -> dict[str, Any] | None:
    """The journal record a line holds (without its newline), or None."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(value, dict) and isinstance(value.get("op_code"), int):
        return value
    return None


@dataclass
class Scan:
    """A journal's lines sorted into the complete records and what is broken."""

    records: list[bytes] = field(default_factory=list)  # each ends with b"\n"
    dropped: list[tuple[int, bytes]] = field(default_factory=list)  # (line number, bytes)
    recovered: int = 0  # complete records found at the end of a broken line
    intact_bytes: int = 0  # length of the file before its first broken line

    @property
    def broken(self) -> bool:
        return bool(self.dropped) or self.recovered > 0

    def add(self, number: int, line: bytes) -> None:
        """Sort line ``number`` (1-based, without its newline) in."""
        if _record(line) is not None:
            self.records.append(line + b"\n")
            if not self.broken:
                self.intact_bytes += len(line) + 1
            return
        start = line.rfind(RECORD_START, 1)
        if start > 0 and _record(line[start:]) is not None:
            self.dropped.append((number, line[:start]))
            self.records.append(line[start:] + b"\n")
            self.recovered += 1
        else:
            self.dropped.append((number, line))


def scan(data: bytes) -> Scan:
    result = Scan()
    lines = data.split(b"\n")
    last = lines.pop()  # after the final newline: empty unless the last line was cut
    for number, line in enumerate(lines, start=1):
        result.add(number, line)
    if last:
        # A cut record is dropped; a whole record whose newline was cut off is kept.
        result.add(len(lines) + 1, last)
        if _record(last) is not None and not result.broken:
            result.recovered += 1  # complete, but the file must get its newline back
    return result


def _first_is_record(data: bytes) -> bool:
    return _record(data.split(b"\n", 1)[0]) is not None


def _not_a_journal(key: str, spec: str, allowed: str) -> ConfigError:
    return ConfigError(
        f"{key}={spec} is not an Optuna journal (its first line is not a journal record); "
        f"allowed: {allowed}"
    )


def _what(found: Scan) -> str:
    lines = ", ".join(str(n) for n, _ in found.dropped[:5])
    more = f" and {len(found.dropped) - 5} more" if len(found.dropped) > 5 else ""
    size = sum(len(b) for _, b in found.dropped)
    what = f"dropped {len(found.dropped)} broken line(s) ({size} bytes: line {lines}{more})"
    if not found.dropped:
        what = "restored the newline cut off its last record"
    recovered = f", {found.recovered} recovered from the end of a broken line" * bool(
        found.recovered and found.dropped
    )
    return f"{what}; {len(found.records)} complete records kept{recovered}"


def _keep_dropped(path: Path, found: Scan) -> Path | None:
    if not found.dropped:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    side = path.with_name(f"{path.name}.dropped-{stamp}")
    side.write_bytes(b"".join(b + b"\n" for _, b in found.dropped))
    return side


def _rewrite(path: Path, found: Scan) -> None:
    """The journal holds only its complete records: cut at the first broken line when
    nothing follows it (in place: other readers' offsets stay valid), else rewritten
    whole (temp file + rename)."""
    data = b"".join(found.records)
    if len(data) == found.intact_bytes <= path.stat().st_size:
        os.truncate(path, found.intact_bytes)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def repair(path: Path, key: str, spec: str, allowed: str) -> None:
    """Before a search writes to journal ``path``: drop its broken lines (kept beside it),
    under Optuna's journal lock, and say so in one line. ConfigError when it is not a
    journal, or cannot be repaired."""
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    if not _looks_broken(path):
        return
    try:
        with get_lock_file(JournalFileSymlinkLock(str(path))):
            found = scan(path.read_bytes())  # again: another writer may have repaired it
            if not found.broken:
                return
            if not _first_is_record(path.read_bytes()):
                raise _not_a_journal(key, spec, allowed)
            side = _keep_dropped(path, found)
            _rewrite(path, found)
    except OSError as err:
        raise ConfigError(
            f"{key}={spec}: its last line is cut and it cannot be repaired "
            f"({err.strerror or err}); allowed: a writable journal file"
        ) from None
    kept = f" (kept in {side})" if side else ""
    _warn(f"{key}={spec}: {CUT}: {_what(found)}{kept}")


def _looks_broken(path: Path) -> bool:
    """A quick look: whether a full scan is needed (it is, when the file does not end
    with a newline or a line does not parse)."""
    data = path.read_bytes()
    return bool(data) and scan(data).broken


def read_complete(path: Path, key: str, spec: str, allowed: str) -> list[dict] | None:
    """The complete records of a broken journal, for a reader (the file is left as it
    is); None when the journal is intact (Optuna reads it itself)."""
    data = path.read_bytes()
    found = scan(data)
    if not data:
        return None
    if not _first_is_record(data):
        raise _not_a_journal(key, spec, allowed)
    if not found.broken:
        return None
    left = "the file is left as it is (the next search on it repairs it)"
    _warn(f"{key}={spec}: {CUT}: {_what(found)}; {left}")
    return [json.loads(line) for line in found.records]


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


class CompleteRecords(BaseJournalBackend):
    """A read-only journal backend over the complete records of a broken journal file."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._records = records

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        yield from self._records[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise ConfigError("a broken journal opened for reading is not written to")
