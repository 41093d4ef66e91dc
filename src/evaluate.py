"""Evaluators and quality metrics from the command line.

    python src/evaluate.py [data=mnist]              train (or load) the data set's evaluator
    python src/evaluate.py ckpt_path=<run>/checkpoints/best.ckpt
                                                      quality metrics of a trained checkpoint
    python src/evaluate.py ckpt_path=... +sampler=class_gaussian   ... with another sampler
    python src/evaluate.py ckpt_path=... +sample_std=0.5           ... a narrower prior

conf/evaluate.yaml lists the groups a training job is checked with (data, model, evaluator,
metrics, trainer, ...), so every data / evaluator / metrics override works as it does for
training. Prints one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, uninstalled

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tinycvae.cli import check_group_choices, exit_on_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    # imported here, not on top: check_group_choices refuses data=nosuch without torch
    from tinycvae.commands.evaluate import evaluate

    with exit_on_error():
        evaluate(cfg)


if __name__ == "__main__":
    check_group_choices(sys.argv[1:])  # one line for data=nosuch, before Hydra composes
    main()
