"""Train tinycvae CVAEs: ``python src/train.py [-m] [overrides]`` (see conf/train.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, uninstalled

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tinycvae.cli import check_group_choices, exit_on_error, objective  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | tuple[float, ...] | None:
    # imported here, not on top: check_group_choices refuses data=nosuch without torch
    from tinycvae.commands.train import run

    with exit_on_error():
        return objective(run(cfg), cfg)


if __name__ == "__main__":
    check_group_choices(sys.argv[1:])  # one line for data=nosuch, before Hydra composes
    main()
