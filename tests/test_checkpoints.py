"""A checkpoint is data: nothing read from it names code to run (issue 20, item 1).

A crafted checkpoint whose stored config holds ``{_target_: builtins.open, _args_:
[<victim>, w]}`` is refused in one line by train resume, export and generate, and the
victim file keeps its bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinycvae.checkpoints import DATA_MODULES, load_model, rebuild_data
from tinycvae.commands.train import run
from tinycvae.errors import ConfigError

from conftest import ROOT, TINY, compose_train, run_train

VICTIM_TEXT = "a user's notes, not to be emptied\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    cfg = compose_train([*TINY, "logger=none", "metrics=none"], tmp)
    return Path(run(cfg)["run_dir"]) / "checkpoints" / "best.ckpt"


def craft(trained: Path, tmp_path: Path, node: str) -> tuple[Path, Path]:
    """A copy of ``trained`` whose stored ``node`` config opens the victim for writing."""
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    ckpt["tinycvae"]["config"][node] = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    return crafted, victim


def command(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINYCVAE_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


def test_train_resume_refuses_a_stored_scheduler_that_names_code(trained, tmp_path):
    crafted, victim = craft(trained, tmp_path, "scheduler")
    args = [*TINY, "logger=none", "metrics=none", f"ckpt_path={crafted}"]
    line = one_error_line(run_train([*args, f"hydra.run.dir={tmp_path}/resumed"], tmp_path))
    assert line.startswith(
        "error: scheduler=torch.optim.lr_scheduler.OneCycleLR differs from the checkpoint's "
        "builtins.open;"
    )
    assert victim.read_text() == VICTIM_TEXT


def test_export_refuses_a_stored_data_node_that_names_code(trained, tmp_path):
    crafted, victim = craft(trained, tmp_path, "data")
    done = command("export.py", [f"checkpoint={crafted}", f"out_dir={tmp_path}/out"], tmp_path)
    line = one_error_line(done)
    assert "data._target_=builtins.open, not a data module tinycvae ships" in line, line
    assert victim.read_text() == VICTIM_TEXT


@pytest.mark.parametrize("extra", ["+sampler=class_gaussian"])
def test_generate_refuses_a_stored_data_node_that_names_code(trained, tmp_path, extra):
    crafted, victim = craft(trained, tmp_path, "data")
    done = command("generate.py", [f"ckpt_path={crafted}", extra], tmp_path)
    assert "data._target_=builtins.open" in one_error_line(done)
    assert victim.read_text() == VICTIM_TEXT


def test_a_directive_inside_shipped_settings_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    data = {
        "_target_": next(iter(DATA_MODULES)),
        "name": "dice",
        "margin": {"_target_": "builtins.open", "_args_": [str(victim), "w"]},
    }
    with pytest.raises(ConfigError, match=r"names code to run \(data\.margin\._target_="):
        rebuild_data(data)
    assert victim.read_text() == VICTIM_TEXT


def test_a_stored_model_node_with_a_directive_is_refused(trained, tmp_path):
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    ckpt["tinycvae"]["config"]["model"]["conditioning"]["_args_"] = ["x"]
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    with pytest.raises(ConfigError, match=r"model\.conditioning\._args_=\['x'\]"):
        load_model(crafted)


def test_the_shipped_data_modules_rebuild_from_a_real_checkpoint(trained):
    _, info = load_model(trained)
    dm = rebuild_data(info["config"]["data"])
    assert type(dm).__name__ == "DiceDataModule" and dm.batch_size == 32
