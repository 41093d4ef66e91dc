"""``summary.json``: each run's own record, independent of the W&B service.

Written atomically (temp file + rename) at the start (status ``running``) and at the end
(``ok`` or ``failed: <reason>``), so a crash leaves a readable ``running`` record and a
finished run's record is never half-written. On a full disk the record is rewritten in
the blocks it already holds, so that it still says how the job ended.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinycvae.disk import overwrite_in_place, write_atomic
from tinycvae.errors import DiskFullError

SUMMARY_NAME = "summary.json"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _encode(data: dict) -> bytes:
    return (json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n").encode()


def write_json_atomic(path: Path, data: dict) -> None:
    """``data`` as JSON into ``path``, whole or not at all (a full disk: DiskFullError)."""
    blob = _encode(data)
    write_atomic(path, lambda fh: fh.write(blob))


def read_summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / SUMMARY_NAME).read_text())


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunSummary:
    """The record of one run; every ``update`` rewrites the file atomically.

    A resumed run continues its record: ``started`` stays the first start, each resume
    is listed under ``resumed_at``, and ``wall_time_s`` adds up every start's time."""

    def __init__(self, run_dir: str | Path, previous: dict | None = None, **fields: Any) -> None:
        self.path = Path(run_dir) / SUMMARY_NAME
        previous = previous or {}
        now = now_iso()
        self.prior_wall_time_s = float(previous.get("wall_time_s", 0.0) or 0.0)
        history = {"started": previous.get("started", now)}
        if previous:
            history["resumed_at"] = [*previous.get("resumed_at", []), now]
        self.data: dict[str, Any] = {
            "status": "running",
            "run_dir": str(run_dir),
            **history,
            **fields,
        }

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` in and rewrite the file. On a full disk the record is rewritten
        in the blocks it already holds (it must never keep saying ``running`` or ``ok``
        for a job that failed); DiskFullError when even that does not fit."""
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(self.data.get(key), dict):
                self.data[key] = {**self.data[key], **value}
            else:
                self.data[key] = value
        try:
            write_json_atomic(self.path, self.data)
        except DiskFullError:
            if not overwrite_in_place(self.path, _encode(self.data)):
                raise

    def finish(self, elapsed_s: float, **fields: Any) -> None:
        """The end of this start: finish time, total wall time over every start."""
        total = round(self.prior_wall_time_s + elapsed_s, 2)
        self.update(finished=now_iso(), wall_time_s=total, **fields)

    @property
    def status(self) -> str:
        return self.data["status"]


SUMMARY_KEYS = ("status", "run_dir", "name", "params", "footprint", "evaluator", "wall_time_s")
MODEL_KEYS = ("arch", "latent", "latent_mode", "dim1", "dim2", "dim3", "dim4", "hidden")


def compact_summary(run_dir: Path) -> dict[str, Any] | None:
    """What a Pareto row needs from a run's summary.json (a few hundred bytes): the copy an
    Optuna trial carries (tinycvae.search.trials)."""
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    out = {k: s[k] for k in SUMMARY_KEYS if k in s}
    cfg = s.get("config") or {}
    model = cfg.get("model") or {}
    out["config"] = {
        "data": {"name": (cfg.get("data") or {}).get("name", "")},
        "model": {
            **{k: model[k] for k in MODEL_KEYS if k in model},
            "conditioning": {"kind": (model.get("conditioning") or {}).get("kind", "")},
        },
        "beta": cfg.get("beta"),
    }
    out["metrics"] = {
        k: v
        for k, v in (s.get("metrics") or {}).items()
        if isinstance(v, (int, float)) and not k.startswith("mcu/")
    }
    out["checkpoints"] = {"best": (s.get("checkpoints") or {}).get("best", "")}
    return out
