"""The smallest decoder that meets an accuracy and fits a chip (``src/pareto.py --select
MCU --min-acc X``).

Among the finished runs whose decoder fits the MCU (the footprint estimate at the chosen
precision), the one with the least flash (then RAM) whose ``gen/acc`` is at least X. A
run's accuracy is the one its C decoder measured where the run was exported
(``src/export.py`` records it in ``<run>/exports/<precision>.json``), else its PyTorch
``gen/acc``, noted as such with the drop the export allows before it fine-tunes
(``max_acc_drop`` in conf/export.yaml). Runs without a finite accuracy are never picked.
When none meets X, the closest runs and how far each is from X are printed and a
SelectError (exit 2) says so in one line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from tinycvae.errors import ConfigError
from tinycvae.front.core import SelectError
from tinycvae.front.rows import RunRow, kernels_note, need
from tinycvae.repo import CONF_DIR

EXPORT_YAML = CONF_DIR / "export.yaml"
CLOSEST = 3  # runs listed when none meets the target


def check_min_acc(value: float | None) -> None:
    """``--min-acc`` is a fraction in (0, 1] (bad input before any work)."""
    if value is None:
        return
    if not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ConfigError(
            f"--min-acc={value} is invalid; allowed: a fraction of correct images in (0, 1], "
            "e.g. 0.99"
        )


def export_record(run_dir: str | Path, precision: str) -> Path:
    """Where ``src/export.py`` records a run's exported decoder and its C accuracy."""
    return Path(run_dir) / "exports" / f"{precision}.json"


@dataclass
class Scored:
    row: RunRow
    acc: float
    source: str  # "C" (the exported decoder, measured) or "PyTorch"


def scored(row: RunRow, precision: str) -> Scored:
    """The run's accuracy from C when its export of this checkpoint recorded one, else
    from PyTorch."""
    try:
        report = json.loads(export_record(row.run_dir, precision).read_text())
        acc = float(report["quality"][f"acc_c_{precision}"])
        if Path(report["checkpoint"]).resolve() == Path(row.checkpoint).resolve():
            return Scored(row, acc, "C")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return Scored(row, row.acc, "PyTorch")


def expected_drop() -> float:
    """The accuracy the int8 export may lose before it fine-tunes (conf/export.yaml)."""
    return float(OmegaConf.load(EXPORT_YAML).max_acc_drop)


def _fitting(rows: list[RunRow], mcu: str, precision: str) -> list[Scored]:
    """The finished runs that fit ``mcu`` and have a finite accuracy, scored."""
    ok = [r for r in rows if r.status == "ok"]
    if ok and all(mcu not in r.fits for r in ok):
        raise ConfigError(f"no run has a footprint estimate for mcu={mcu}")
    fitting = [scored(r, precision) for r in ok if r.fits.get(mcu)]
    fitting = [s for s in fitting if math.isfinite(s.acc)]
    if not fitting:
        raise SelectError(f"no finished run with a gen/acc fits {mcu}")
    return fitting


def describe(s: Scored, precision: str, mcu: str) -> str:
    """One run's line: its accuracy and what it needs on ``mcu``, the figures ``--select``
    and the export print (RAM with the chip's reserve, not the streamed activations)."""
    r, needs = s.row, need(s.row, mcu)
    line = (
        f"{r.name} (dims {r.dims}, {r.params_decoder} weights): gen/acc {s.acc:.3f} from "
        f"{s.source}, flash {needs['flash_bytes']:.0f} B, RAM {needs['ram_bytes']:.0f} B"
        f"{kernels_note(r, mcu)}"
    )
    if s.source == "PyTorch":
        line += (
            f" [not exported: {precision} from C is expected to lose up to "
            f"{100 * expected_drop():.0f} point(s), the export's max_acc_drop]"
        )
    return line


def smallest_meeting(rows: list[RunRow], mcu: str, min_acc: float, precision: str) -> Scored:
    """The smallest fitting run with accuracy >= ``min_acc``; printed with its checkpoint.
    None meeting it: the closest runs printed, then a SelectError."""
    fitting = _fitting(rows, mcu, precision)
    meeting = [s for s in fitting if s.acc >= min_acc]
    if not meeting:
        closest = sorted(fitting, key=lambda s: (-s.acc, s.row.flash_bytes))[:CLOSEST]
        print(f"no run that fits {mcu} reaches gen/acc >= {min_acc:g}; the closest:")
        for s in closest:
            short = 100 * (min_acc - s.acc)
            print(f"  {short:.1f} points short: {describe(s, precision, mcu)} ({s.row.run_dir})")
        best = closest[0]
        raise SelectError(
            f"no run that fits {mcu} reaches gen/acc >= {min_acc:g}: the closest, "
            f"{best.row.name}, has {best.acc:.3f} from {best.source} "
            f"({100 * (min_acc - best.acc):.1f} points short)"
        )
    best = min(meeting, key=lambda s: (s.row.flash_bytes, s.row.ram_bytes, -s.acc))
    print(
        f"smallest for {mcu} ({precision}) at gen/acc >= {min_acc:g}: "
        f"{describe(best, precision, mcu)}\nrun: {best.row.run_dir}\n"
        f"checkpoint: {best.row.checkpoint}"
    )
    return best
