"""Shared fixtures: compose the real Hydra configs, shrunk to run in seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TRAIN = ROOT / "src" / "train.py"

os.environ.setdefault("WANDB_SILENT", "true")
os.environ["WANDB_MODE"] = "offline"  # never call the W&B service from the tests


def compose_train(overrides: list[str], tmp_path: Path | None = None) -> DictConfig:
    """The composed job config for ``overrides``; with ``tmp_path``, its folders there."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if tmp_path is not None:
        with open_dict(cfg):
            cfg.paths.root_dir = str(tmp_path)
            cfg.paths.data_dir = str(tmp_path / "data")
            cfg.paths.log_dir = str(tmp_path / "logs")
            if not any(o.startswith("paths.output_dir=") for o in overrides):
                cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def needs_tools(*tools: str, install: str = "") -> pytest.MarkDecorator:
    """Skip unless every command in ``tools`` is on PATH: the one way a test says it needs
    a tool; the reason names the missing ones and (``install``) where they come from."""
    missing = [t for t in tools if shutil.which(t) is None]
    where = f" ({install})" if install else ""
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} on PATH{where}")


# The electronic-die article's table (docs/references.md): decoder weights with the angle
# bypass (latent 1, one-hot, 6 classes).
# The article counts the first Linear's bias out: with one-hot conditioning it folds into the
# per-class column, so PyTorch's count is the anchor plus dim4 * 4 * 4.
ANCHORS = {
    (2, 2, 2, 2): 357,
    (3, 3, 3, 3): 616,
    (4, 4, 4, 4): 929,
    (8, 8, 8, 8): 2721,
    (2, 2, 8, 16): 3155,
    (4, 4, 16, 16): 4877,
    (16, 16, 16, 16): 8897,
    (32, 32, 32, 32): 31617,
    (64, 64, 64, 64): 118529,
}


# A job that trains in about a second: tiny dice, tiny model, one epoch.
TINY = [
    "debug=smoke",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
    "trainer.limit_test_batches=null",
    "data.num_train=128",
    "data.num_val=32",
    "data.num_test=32",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "model.dim1=2",
    "model.dim2=2",
    "model.dim3=4",
    "model.dim4=4",
]


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str, logger: str = "none", metrics: str = "none") -> DictConfig:
        return compose_train(
            [*TINY, f"logger={logger}", f"metrics={metrics}", *overrides], tmp_path
        )

    return make


def run_train(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python src/train.py ARGS`` as a user runs it, in a scratch folder."""
    env = {**os.environ, "TINYCVAE_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(TRAIN), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# An Optuna search over TINY jobs: no evaluator or pictures, objectives every tiny job has
# (the footprint and val/loss), a heartbeat fast enough that a killed trial is found stale
# in seconds, and TINY without its widths (the search draws model.dim1..dim4 itself).
FAST_SEARCH = [
    "logger=none",
    "metrics=none",
    "objective=[mcu/int8/flash_bytes,val/loss]",
    "hydra.sweeper.direction=[minimize,minimize]",
    "hydra.sweeper.heartbeat_interval=1",
    "hydra.sweeper.grace_period=3",
    *[o for o in TINY if not o.startswith("model.dim")],
]
