"""Issue 20, item 9: cases that were silent or misleading now give one honest line, each
reproduced as the command a user typed (subprocesses where the behaviour is the process's).
generate's, pareto's and export's cases live beside their own tests (test_generate.py,
test_pareto.py, test_export.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from tinycvae.errors import ConfigError, ConfigWarning
from tinycvae.job import build
from tinycvae.known_keys import known_keys, warn_unknown_keys

from conftest import CONF, ROOT, TINY, run_train


def _one_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def test_ckpt_path_last_with_only_best_ckpt_names_it_instead_of_starting_fresh(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    best = run_dir / "checkpoints" / "best.ckpt"
    best.write_bytes(b"the user's trained weights")
    proc = run_train([*TINY, "logger=none", "metrics=none", "ckpt_path=last",
                      f"hydra.run.dir={run_dir}"], tmp_path)  # fmt: skip
    line = _one_error(proc)
    assert line == (
        f"error: ckpt_path=last: {run_dir / 'checkpoints'} has no last.ckpt to resume, only "
        f"best.ckpt; allowed: ckpt_path={best} to continue from it, or a new run folder "
        "(hydra.run.dir=...)"
    )
    assert "starting fresh" not in proc.stdout + proc.stderr
    assert best.read_bytes() == b"the user's trained weights"


def test_a_quoted_number_is_said_to_be_a_string(tmp_path):
    line = _one_error(run_train([*TINY, "logger=none", "metrics=none", "beta='1e-5'"], tmp_path))
    assert line == (
        "error: beta='1e-5' is a string (quoted), not a number; allowed: a finite number >= 0, "
        "written without quotes (beta=1e-5)"
    )


def test_a_word_stays_invalid_as_before(tiny_cfg):
    with pytest.raises(ConfigError, match=r"^beta=abc is invalid; allowed: a finite number"):
        build(tiny_cfg("beta=abc"))


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(name, overrides=overrides)


def test_sample_std_is_a_setting_of_evaluate_and_generate_not_of_train(tmp_path):
    """``python src/evaluate.py ckpt_path=... +sample_std=0.5`` used to warn "ignored" and
    then use it; each command now warns with its own settings."""
    cfg = _compose("evaluate", [*TINY, "logger=none", "+sample_std=0.5", "+sampler=prior"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        warn_unknown_keys(cfg, "evaluate")
        warn_unknown_keys(_compose("generate", ["+sample_std=0.5", "label=3"]), "generate")
    assert {"sample_std", "sampler"} <= known_keys("generate")
    assert "sample_std" not in known_keys("train")
    with pytest.warns(ConfigWarning, match=r"^sample_std=0.5 is not a setting .* of train:"):
        warn_unknown_keys(_compose("train", ["+sample_std=0.5"]), "train")


def test_export_warns_of_a_typo_as_train_does(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "export.py"), "checkpoint=x.ckpt", "+target=[host]",
         "targets=[]", f"out_dir={tmp_path}/d", "wandb.mode=disabled"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    assert proc.returncode == 2 and "x.ckpt" in proc.stderr.strip().splitlines()[-1]
    (said,) = [ln for ln in proc.stderr.splitlines() if "target=" in ln]
    assert said.startswith("warning: target=['host'] is not a setting tinycvae reads; it is ")
    assert "targets" in said.split("(", 1)[1]
