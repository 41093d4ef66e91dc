"""``src/pareto.py``: the size/quality Pareto front of finished runs (an Optuna study, a
W&B project or run folders), written out, and the run picked for a chip
(:mod:`tinycvae.front` holds the pieces)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tinycvae.checks import require_writable_dir
from tinycvae.errors import ConfigError
from tinycvae.front.core import mark_fronts, select
from tinycvae.front.outputs import log_wandb, plot, write_table
from tinycvae.front.rows import RunRow, kernels_note, need
from tinycvae.front.smallest import check_min_acc, smallest_meeting
from tinycvae.front.summaries import collect_runs, rows_from_wandb
from tinycvae.mcu.footprint import check_precision, load_mcu
from tinycvae.search.trials import default_out, load_study, rows_from_study


def run(
    folders: Sequence[str | Path] = (),
    *,
    precision: str = "int8",
    mcu: str | None = None,
    out: Path | None = None,
    wandb_project: str | None = None,
    optuna_storage: str | None = None,
    study: str | None = None,
    wandb_mode: str = "auto",
    project: str = "tinycvae",
    min_acc: float | None = None,
) -> RunRow | None:
    """Read the runs (an Optuna study, a W&B project, or ``folders``, in that order of
    precedence), mark the fronts, write pareto.{csv,md,png} into ``out`` (default: the
    first folder, else beside the study's file), print the table, log it to W&B project
    ``project``; with ``mcu``, print and return the best run that fits it, or with
    ``min_acc`` too the smallest that fits and meets it (:mod:`tinycvae.front.smallest`). Every
    input is checked before any work."""
    check_min_acc(min_acc)
    if min_acc is not None and not mcu:
        raise ConfigError(f"--min-acc={min_acc} needs --select MCU (the chip it must fit)")
    if mcu:
        load_mcu(mcu)  # an unknown MCU is bad input, said before any work
    check_precision(precision)
    if out or folders:  # where pareto.* go: checked before any work
        require_writable_dir(out or Path(folders[0]), "--out")
    study_out = None
    if optuna_storage:
        found, storage = load_study(optuna_storage, study)
        rows = rows_from_study(found, precision)
        study_out = default_out(storage)
    elif wandb_project:
        rows = rows_from_wandb(wandb_project, precision)
    elif folders:
        rows = collect_runs(folders, precision)
    else:
        raise ConfigError(
            "no runs given; allowed: one or more folders, --wandb-project or --optuna-storage"
        )
    mark_fronts(rows)
    out = Path(out or (folders[0] if folders else study_out or "."))
    paths = write_table(rows, out, precision)
    paths["png"] = plot(rows, out / "pareto.png", precision)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    log_wandb(rows, paths["png"], project, wandb_mode)
    if not mcu:
        return None
    if min_acc is not None:
        return smallest_meeting(rows, mcu, min_acc, precision).row
    best = select(rows, mcu)
    needs = need(best, mcu)
    print(
        f"selected for {mcu} ({precision}): {best.name}: acc {best.acc:.3f}, "
        f"flash {needs['flash_bytes']:.0f} B, RAM {needs['ram_bytes']:.0f} B"
        f"{kernels_note(best, mcu)}\n"
        f"run: {best.run_dir}\ncheckpoint: {best.checkpoint}"
    )
    return best
