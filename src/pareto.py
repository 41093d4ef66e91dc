"""The size/quality Pareto front of finished runs, and the run that fits a chip.

    python src/pareto.py logs/multiruns/<sweep> [more folders] [--precision int8]
                         [--select ch32v003] [--out DIR] [--wandb-mode auto|offline|disabled]
    python src/pareto.py --wandb-project ENTITY/PROJECT ...   (online: read runs from W&B)
    python src/pareto.py --optuna-storage STORAGE [--study NAME] ...   (an Optuna study:
        a journal file, sqlite:///x.db or a database URL; see tinycvae.search.storage)

Writes pareto.csv, pareto.md and pareto.png into --out (default: the first folder, or
the study's journal/SQLite file's folder),
logs a W&B table and scatter, prints the front; with --select prints the best run whose
decoder fits the MCU and its checkpoint (the input to the firmware export).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, uninstalled

from tinycvae.cli import exit_on_error  # noqa: E402
from tinycvae.errors import ConfigError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="run or multirun folders")
    parser.add_argument("--precision", default="int8", help="fp32 | int8 | int4")
    parser.add_argument("--select", metavar="MCU", help="print the best run that fits MCU")
    parser.add_argument("--out", type=Path, help="where to write pareto.{csv,md,png}")
    parser.add_argument("--wandb-project", help="read runs from this W&B project (online)")
    parser.add_argument("--optuna-storage", help="read the trials of an Optuna study")
    parser.add_argument("--study", help="the study's name (optional when it holds one)")
    parser.add_argument("--wandb-mode", default="auto", help="auto | offline | online | disabled")
    parser.add_argument("--project", default="tinycvae", help="W&B project to log the front to")
    args = parser.parse_args(argv)
    with exit_on_error():
        return run(args)


def run(args: argparse.Namespace) -> int:
    from tinycvae import pareto
    from tinycvae.checks import require_writable_dir
    from tinycvae.deploy.footprint import check_precision, load_mcu

    if args.select:
        load_mcu(args.select)  # an unknown MCU is bad input, said before any work
    check_precision(args.precision)
    if args.out or args.folders:  # where pareto.* go: checked before any work
        require_writable_dir(args.out or Path(args.folders[0]), "--out")
    study_out = None
    if args.optuna_storage:
        from tinycvae.search.front import default_out, load_study, rows_from_study

        study, storage = load_study(args.optuna_storage, args.study)
        rows = rows_from_study(study, args.precision)
        study_out = default_out(storage)
    elif args.wandb_project:
        rows = pareto.rows_from_wandb(args.wandb_project, args.precision)
    elif args.folders:
        rows = pareto.collect_runs(args.folders, args.precision)
    else:
        raise ConfigError(
            "no runs given; allowed: one or more folders, --wandb-project or --optuna-storage"
        )
    pareto.mark_fronts(rows)
    out = args.out or (Path(args.folders[0]) if args.folders else study_out or Path("."))
    paths = pareto.write_table(rows, out, args.precision)
    paths["png"] = pareto.plot(rows, out / "pareto.png", args.precision)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    pareto.log_wandb(rows, paths["png"], args.project, args.wandb_mode)
    if args.select:
        best = pareto.select(rows, args.select)
        print(
            f"selected for {args.select} ({args.precision}): {best.name}: acc {best.acc:.3f}, "
            f"flash {best.flash_bytes:.0f} B, RAM {best.ram_bytes:.0f} B\n"
            f"run: {best.run_dir}\ncheckpoint: {best.checkpoint}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
