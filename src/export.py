"""Export a trained run's decoder to C firmware under deploy/ (see conf/export.yaml).

    python src/export.py run=<run folder>
    python src/export.py select_from=[<multirun folder>] mcu=ch32v003
    make -C deploy all && make -C deploy run-qemu

Prints the report (also written to deploy/model/report.json) as JSON, then the
per-layer breakdown (kind, shapes, MACs, flash and activation bytes) as a table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, uninstalled

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tinycvae.cli import check_group_choices, exit_on_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    # imported here, not on top: check_group_choices refuses data=nosuch without torch
    from tinycvae.commands.export import run

    with exit_on_error():
        run(cfg)


if __name__ == "__main__":
    check_group_choices(sys.argv[1:])  # one line for data=nosuch, before Hydra composes
    main()
