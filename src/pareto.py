"""The size/quality Pareto front of finished runs, and the run that fits a chip.

    python src/pareto.py logs/multiruns/<sweep> [more folders] [--precision int8]
                         [--select ch32v003 [--min-acc 0.99]] [--out DIR]
                         [--wandb-mode auto|offline|disabled]
    python src/pareto.py --wandb-project ENTITY/PROJECT ...   (online: read runs from W&B)
    python src/pareto.py --optuna-storage STORAGE [--study NAME] ...   (an Optuna study:
        a journal file, sqlite:///x.db or a database URL; see tinycvae.search.storage)

Writes pareto.csv, pareto.md and pareto.png into --out (default: the first folder, or
the study's journal/SQLite file's folder),
logs a W&B table and scatter, prints the front; with --select prints the best run whose
decoder fits the MCU and its checkpoint (the input to the firmware export); with
--min-acc X too, the smallest decoder that fits and whose gen/acc (from C where the run
was exported, else from PyTorch) is at least X.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, uninstalled

from tinycvae.cli import exit_on_error  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="run or multirun folders")
    parser.add_argument("--precision", default="int8", help="fp32 | int8 | int4")
    parser.add_argument(
        "--select", dest="mcu", metavar="MCU", help="print the best run that fits MCU"
    )
    parser.add_argument(
        "--min-acc",
        type=float,
        metavar="X",
        help="with --select: the smallest run that fits MCU with gen/acc >= X (0 < X <= 1)",
    )
    parser.add_argument("--out", type=Path, help="where to write pareto.{csv,md,png}")
    parser.add_argument("--wandb-project", help="read runs from this W&B project (online)")
    parser.add_argument("--optuna-storage", help="read the trials of an Optuna study")
    parser.add_argument("--study", help="the study's name (optional when it holds one)")
    parser.add_argument("--wandb-mode", default="auto", help="auto | offline | online | disabled")
    parser.add_argument("--project", default="tinycvae", help="W&B project to log the front to")
    args = parser.parse_args(argv)
    with exit_on_error():
        from tinycvae.commands import pareto  # after parsing: --help stays quick

        pareto.run(**vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
