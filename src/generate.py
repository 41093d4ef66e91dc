"""Draw images from a trained checkpoint (see conf/generate.yaml).

    python src/generate.py run=<run folder> prompt="roll a six"     a row of sixes
    python src/generate.py ckpt_path=<file.ckpt> label=Coat n=16    16 coats
    python src/generate.py run=<run folder>                         a row per class
    python src/generate.py run=... prompt="five pips" +sampler=class_gaussian wandb=true

Writes a PNG grid (default <run>/generated/<label or prompt>_n<n>_seed<seed>_<sampler>.png)
and prints its path.
Bad input is one ``error:`` line and exit status 2, before anything is drawn.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, uninstalled

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tinycvae.cli import check_group_choices, exit_on_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    # imported here, not on top: check_group_choices refuses data=nosuch without torch
    from tinycvae.commands.generate import generate

    with exit_on_error():
        generate(cfg)


if __name__ == "__main__":
    check_group_choices(sys.argv[1:])  # one line for data=nosuch, before Hydra composes
    main()
