"""Reading a run back: load_model, and ``src/evaluate.py`` scoring a checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tinycvae.checkpoints import load_model
from tinycvae.commands.train import run
from tinycvae.errors import ConfigError

from conftest import ROOT, TINY


def test_load_model_rebuilds_the_trained_model(tiny_cfg):
    summary = run(tiny_cfg("conditioning=embed_add", "model.latent=3"))
    model, info = load_model(summary["checkpoints"]["best"])
    assert model.latent == 3 and type(model.decoder.condition).__name__ == "EmbedAdd"
    assert info["config"]["model"]["conditioning"]["kind"] == "embed_add"
    y = torch.arange(6)
    assert model.sample(y, generator=torch.Generator().manual_seed(0)).shape == (6, 1, 32, 32)


def test_a_corrupt_or_missing_checkpoint_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a loadable tinycvae checkpoint"):
        load_model(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(tmp_path / "missing.ckpt")


def test_evaluate_scores_a_checkpoint_like_the_run_did(tmp_path):
    env = {**os.environ, "TINYCVAE_ROOT": str(tmp_path)}
    train = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, "logger=none"]
    subprocess.run(train, cwd=tmp_path, env=env, check=True, capture_output=True)
    (summary_path,) = tmp_path.glob("logs/runs/*/summary.json")
    summary = json.loads(summary_path.read_text())
    evaluate = [
        sys.executable,
        str(ROOT / "src" / "evaluate.py"),
        *TINY,
        f"ckpt_path={summary['checkpoints']['best']}",
    ]
    proc = subprocess.run(evaluate, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert out["metrics"]["gen/acc"] == pytest.approx(summary["metrics"]["gen/acc"])
    assert out["metrics"]["test/mse"] == pytest.approx(summary["metrics"]["test/mse"], rel=1e-5)
    assert out["sampler"] == "prior"
    other = subprocess.run(
        [*evaluate, "+sampler=class_gaussian"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert other.returncode == 0, other.stderr[-2000:]
    scored = json.loads(other.stdout[other.stdout.index("{") :])
    assert scored["sampler"] == "class_gaussian" and 0.0 <= scored["metrics"]["gen/acc"] <= 1.0
    assert scored["metrics"]["test/mse"] == pytest.approx(out["metrics"]["test/mse"])
