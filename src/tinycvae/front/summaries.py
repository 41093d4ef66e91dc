"""Rows from the runs' own ``summary.json`` files (run or multirun folders, searched
recursively) and, online, from a W&B project.

A run folder's own files are the truth: a row from a folder is the folder where its
``summary.json`` was found and that folder's ``checkpoints/best.ckpt``, whatever paths
the summary names (a moved run folder still exports; a summary cannot point the export
at another run's checkpoint).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from tinycvae.errors import ConfigError
from tinycvae.front.rows import RunRow, row_from_summary
from tinycvae.mcu.footprint import check_precision


def collect_runs(folders: list[str | Path], precision: str = "int8") -> list[RunRow]:
    """Every run under ``folders`` (searched recursively for summary.json)."""
    check_precision(precision)
    rows = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder; allowed: run or multirun folders")
        found = sorted(folder.rglob("summary.json"))
        if not found:
            raise ConfigError(f"{folder} holds no runs (no summary.json below it)")
        for path in found:
            try:
                row = row_from_summary(json.loads(path.read_text()), precision)
            except (OSError, ValueError, TypeError, AttributeError) as err:
                reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
                warnings.warn(f"{path} is unreadable ({reason}); skipped", stacklevel=2)
                continue
            rows.append(_found_at(row, path.parent))
    if not rows:
        raise ConfigError(f"no readable summary.json under {', '.join(map(str, folders))}")
    return rows


def _found_at(row: RunRow, folder: Path) -> RunRow:
    """``row`` as the run folder found on disk: that folder, and its own best checkpoint."""
    own = folder / "checkpoints" / "best.ckpt"
    row.run_dir = str(folder)
    row.checkpoint = str(own) if own.is_file() else ""
    return row


def rows_from_wandb(project: str, precision: str) -> list[RunRow]:
    """Rows from a W&B project (online): each run's config and summary."""
    import wandb

    rows = []
    for run in wandb.Api().runs(project):
        s = dict(run.summary)
        summary = {
            "run_dir": run.url,
            "name": run.name,
            "status": s.get("status", "ok" if run.state == "finished" else run.state),
            "config": dict(run.config),
            "metrics": {k: v for k, v in s.items() if isinstance(v, (int, float))},
            "params": {"params/decoder": s.get("params/decoder", 0)},
            "footprint": {precision: _footprint_from_flat(s, precision)},
        }
        rows.append(row_from_summary(summary, precision))
    return rows


def _footprint_from_flat(s: dict, precision: str) -> dict:
    p = f"mcu/{precision}/"
    fits = {k[len(p) + 5 :]: bool(v) for k, v in s.items() if k.startswith(p + "fits/")}
    need: dict[str, dict[str, float]] = {}
    for k, v in s.items():
        if k.startswith(p + "need/") and k.count("/") == 4:
            mcu, what = k.split("/")[3:]
            need.setdefault(mcu, {})[what] = v
    return {
        "flash_bytes": s.get(p + "flash_bytes", math.nan),
        "ram_bytes_streamed": s.get(p + "ram_bytes_streamed", s.get(p + "ram_bytes", math.nan)),
        "fits": fits,
        "need": need,
    }
