"""Faults a sweep meets in real life, reproduced as a user or a scheduler causes them:
two writers, SIGTERM, a plateau, a corrupt cache, several devices, bad files, bad
choices, silent mistakes and litter. Process-level behaviour runs as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinycvae.cache import CacheWarning
from tinycvae.commands.train import run
from tinycvae.data.dice import DiceSettings, load_dice
from tinycvae.errors import ConfigError
from tinycvae.front.core import mark_fronts
from tinycvae.front.summaries import collect_runs
from tinycvae.job import build
from tinycvae.run_folder import writer_lock
from tinycvae.summary import read_summary

from conftest import ROOT, TINY, run_train

LONG = [*TINY, "logger=none", "metrics=none", "trainer.max_epochs=40"]


def start_train(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "TINYCVAE_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.2)


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "logs" / "runs").glob("*")) if (root / "logs").exists() else []


# 1. Two runs in one folder: the second is refused with one line; the first is intact.
def test_a_second_writer_of_a_run_folder_is_refused(tmp_path):
    folder = tmp_path / "runs" / "same"
    # far longer than two more interpreter starts on any machine: it is stopped below
    args = [*LONG, "trainer.max_epochs=100000", f"hydra.run.dir={folder}"]
    first = start_train(args, tmp_path)
    wait_for(folder / ".tinycvae.lock", first)  # as early as it gets: no checkpoint yet
    early = run_train(args, tmp_path)
    wait_for(folder / "checkpoints" / "last.ckpt", first)
    late = run_train([*args, "ckpt_path=last"], tmp_path)
    for second in (early, late):
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert line == (
            f"error: run folder {folder} is in use by a running job (pid {first.pid}); "
            "allowed: another folder (hydra.run.dir=...), or wait for that job to end"
        )
    # The first job is still training, and its folder is its own: the refused writers left
    # its record, lock and checkpoints alone (SIGTERM ends it with its record, as in 2.).
    assert first.poll() is None
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 143, err[-2000:]
    summary = read_summary(folder)
    assert summary["status"] == "failed: interrupted (SIGTERM)" and "resumed_at" not in summary
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] >= 0
    with writer_lock(folder):  # and its lock went with it
        pass


# 2. SIGTERM (pre-emption, timeout, docker stop) exits 143; ckpt_path=last resumes the
# record: first start kept, wall time added up.
def test_sigterm_exits_143_and_the_run_resumes_with_its_record(tmp_path):
    folder = tmp_path / "runs" / "pre-empted"
    proc = start_train([*LONG, f"hydra.run.dir={folder}"], tmp_path)
    wait_for(folder / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    killed = read_summary(folder)
    assert killed["status"] == "failed: interrupted (SIGTERM)"
    resumed = run_train([*LONG, f"hydra.run.dir={folder}", "ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = read_summary(folder)
    assert done["status"] == "ok"
    assert done["started"] == killed["started"] and len(done["resumed_at"]) == 1
    assert done["wall_time_s"] > killed["wall_time_s"]
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 39


def test_sigterm_before_training_still_records_and_exits_143(tmp_path):
    """A signal outside Lightning's loops (here: while the evaluator trains) ends the job
    at once, with its record."""
    folder = tmp_path / "runs" / "early"
    args = [*TINY, "logger=none", "evaluator.epochs=200", f"hydra.run.dir={folder}"]
    proc = start_train(args, tmp_path)
    wait_for(folder / "summary.json", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert read_summary(folder)["status"] == "failed: interrupted (SIGTERM)"


# 3. last.ckpt follows the last finished epoch even when val/loss never improves.
def test_last_checkpoint_is_the_last_epoch_in_a_plateau(tiny_cfg, tmp_path):
    # mode=max on a falling loss: the "best" is epoch 0 and is never replaced.
    cfg = tiny_cfg("trainer.max_epochs=4", "callbacks.model_checkpoint.mode=max")
    summary = run(cfg)
    assert summary["status"] == "ok"
    best = torch.load(summary["checkpoints"]["best"], weights_only=True)
    last = torch.load(summary["checkpoints"]["last"], weights_only=True)
    assert best["epoch"] == 0 and last["epoch"] == 3


# 4. A corrupt data cache is rebuilt with a warning naming the file.
def test_a_truncated_dice_cache_is_rendered_again(tmp_path):
    s = DiceSettings(num_train=64, num_val=16, num_test=16)
    first = load_dice(s, tmp_path)
    (path,) = (tmp_path / "dice").glob("dice-*.pt")
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.warns(CacheWarning, match=f"{path}.*unreadable.*re-rendering"):
        again = load_dice(s, tmp_path)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(load_dice(s, tmp_path).test.labels, first.test.labels)  # healed


def test_the_cache_warning_is_one_line_on_the_command_line(tmp_path):
    args = [*TINY, "logger=none", "metrics=none", "trainer.max_epochs=1"]
    assert run_train(args, tmp_path).returncode == 0
    (path,) = (tmp_path / "data" / "dice").glob("dice-*.pt")
    path.write_bytes(b"not a zip archive")
    proc = run_train(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [ln for ln in proc.stderr.splitlines() if "unreadable" in ln]
    assert warned == [warned[0]] and warned[0].startswith(f"warning: cache {path}")


# 5. More than one device: refused before any work, with the way to use them instead.
def test_several_devices_are_refused_in_one_line(tmp_path, tiny_cfg):
    proc = run_train([*TINY, "trainer.devices=4"], tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: trainer.devices=4: a job trains on one device")
    assert "hydra/launcher=local_parallel" in line
    assert run_dirs(tmp_path) == [] and not (tmp_path / "data").exists()
    # several nodes: the same refusal, from the same check (in-process)
    with pytest.raises(ConfigError, match=r"^trainer.num_nodes=2: a job trains on one device"):
        build(tiny_cfg("+trainer.num_nodes=2"))


# 6. Bad files among the runs: one line naming the file; the other runs still read.
def write_summary(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(text)
    return folder / "summary.json"


def good_summary(name: str, flash: int, acc: float, fid: float, evaluator: str) -> str:
    return json.dumps(
        {
            "status": "ok",
            "name": name,
            "run_dir": name,
            "config": {"model": {"arch": "conv", "dim1": 2, "dim2": 2, "dim3": 2, "dim4": 2}},
            "metrics": {"gen/acc": acc, "gen/fid_evaluator": fid},
            "footprint": {"int8": {"flash_bytes": flash, "ram_bytes": 100, "fits": {}}},
            "evaluator": {"path": f"data/evaluators/{evaluator}.pt"},
        }
    )


def test_unreadable_summaries_are_named_and_skipped(tmp_path):
    write_summary(tmp_path / "s" / "0", good_summary("a", 1000, 0.9, 10.0, "dice-x"))
    truncated = write_summary(tmp_path / "s" / "1", good_summary("b", 900, 0.8, 9.0, "dice-x")[:40])
    listed = write_summary(tmp_path / "s" / "2", "[1, 2, 3]")
    with pytest.warns(UserWarning) as caught:
        rows = collect_runs([tmp_path / "s"])
    assert [r.name for r in rows] == ["a"]
    messages = [str(w.message) for w in caught]
    assert any(str(truncated) in m and "skipped" in m for m in messages)
    assert any(str(listed) in m and "JSON list" in m for m in messages)


def test_pareto_cli_names_a_bad_file_and_writes_the_front(tmp_path):
    write_summary(tmp_path / "s" / "0", good_summary("a", 1000, 0.9, 10.0, "dice-x"))
    bad = write_summary(tmp_path / "s" / "1", "{ truncated")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "pareto.py"), str(tmp_path / "s"),
         "--wandb-mode", "disabled"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "skipped" in ln]
    assert line.startswith(f"warning: {bad} is unreadable")
    assert (tmp_path / "s" / "pareto.csv").is_file()


def test_an_unwritable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    write_summary(tmp_path / "s" / "0", good_summary("a", 1000, 0.9, 10.0, "dice-x"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "pareto.py"), str(tmp_path / "s"),
         "--out", str(blocker / "out"), "--wandb-mode", "disabled"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --out={blocker / 'out'} cannot be written (permission denied, or not a "
        "folder); allowed: a writable folder"
    ]
    train = run_train([*TINY, f"hydra.run.dir={blocker}/run"], tmp_path)
    assert train.returncode == 2
    (line,) = train.stderr.strip().splitlines()
    assert line.startswith(f"error: hydra.run.dir={blocker}/run cannot be written")


def test_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    """Permission bits as a non-root user sees them (root may write anywhere)."""
    from tinycvae import checks

    monkeypatch.setattr(checks.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="out_dir=.* cannot be written"):
        checks.require_writable_dir(tmp_path, "out_dir")


# 7. Unknown group choices: one line with the allowed names, exit 2, for every command,
# before torch and Lightning are loaded (about 8 s of CPU): ``-X importtime`` lists every
# module the command imported.
@pytest.mark.parametrize(
    "script, override, allowed",
    [
        ("train.py", "data=nosuch", "cifar10, dice, fashion_mnist, mnist"),
        ("train.py", "model=nosuch", "conv, mlp"),
        ("train.py", "conditioning=nosuch", "embed_add, embed_concat, onehot, project_add"),
        ("evaluate.py", "data=nosuch", "cifar10, dice, fashion_mnist, mnist"),
        ("generate.py", "data=nosuch", "cifar10, dice, fashion_mnist, mnist"),
        ("export.py", "data=nosuch", "cifar10, dice, fashion_mnist, mnist"),
        ("export.py", "mcu=nosuch", "ch32v003, cortex_m0plus_16k, rp2040, stm32g031"),
    ],
)
def test_an_unknown_group_choice_is_one_line(tmp_path, script, override, allowed):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "src" / script), override],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TINYCVAE_ROOT": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in lines if ln.startswith("import time:")}
    assert "hydra" in imported and not imported & {"torch", "lightning", "pytorch_lightning"}
    (line,) = [ln for ln in lines if not ln.startswith("import time:")]
    key, value = override.split("=")
    assert line.startswith(f"error: {key}={value} is unknown; allowed: {allowed}")
    assert run_dirs(tmp_path) == []


def test_a_sweep_with_one_unknown_choice_is_refused(tmp_path):
    proc = run_train(["-m", "data=dice,nosuch", *TINY], tmp_path)
    assert proc.returncode == 2 and "data=nosuch is unknown" in proc.stderr
    assert not (tmp_path / "logs").exists()


# 8. Values that used to be accepted silently.
def test_a_zero_learning_rate_is_refused(tiny_cfg):
    with pytest.raises(ConfigError, match=r"optimizer.lr=0 is invalid; allowed: .*> 0"):
        build(tiny_cfg("optimizer.lr=0"))


def test_an_unknown_top_level_key_is_warned_with_its_value(tmp_path):
    proc = run_train([*TINY, "logger=none", "metrics=none", "+unknwon=1"], tmp_path)
    assert proc.returncode == 0
    (line,) = [ln for ln in proc.stderr.splitlines() if "unknwon" in ln]
    assert line.startswith("warning: unknwon=1 is not a setting tinycvae reads; it is ignored")


def test_too_few_images_for_the_evaluator_are_refused(tmp_path):
    proc = run_train(["debug=smoke", "data.num_train=3"], tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: data.num_train=3 is too few images to train the evaluator")
    assert "metrics=none" in line and run_dirs(tmp_path) == []


def test_fids_from_different_evaluators_get_separate_fronts(tmp_path):
    write_summary(tmp_path / "s" / "0", good_summary("a", 1000, 0.9, 10.0, "dice-x"))
    write_summary(tmp_path / "s" / "1", good_summary("b", 2000, 0.9, 5.0, "dice-x"))
    write_summary(tmp_path / "s" / "2", good_summary("c", 3000, 0.9, 50.0, "dice-y"))
    rows = collect_runs([tmp_path / "s"])
    with pytest.warns(UserWarning, match="2 different evaluators"):
        mark_fronts(rows)
    # c's FID is worse than a's and b's, but it is measured in other features: its own front.
    assert {r.name: r.front_fid for r in rows} == {"a": True, "b": True, "c": True}


# 9. A refused command leaves no folder.
def test_refused_commands_leave_no_run_folder(tmp_path):
    assert run_train([*TINY, "beta=-1"], tmp_path).returncode == 2
    evaluate = subprocess.run(
        [sys.executable, str(ROOT / "src" / "evaluate.py"), "trainer.max_epochs=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TINYCVAE_ROOT": str(tmp_path)},
    )  # fmt: skip
    assert evaluate.returncode == 2
    assert run_dirs(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_names_an_unwritable_out_dir_and_a_bad_summary(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    export = [sys.executable, str(ROOT / "src" / "export.py")]
    proc = subprocess.run(
        [*export, "checkpoint=x.ckpt", f"out_dir={blocker}/deploy"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: out_dir={blocker}/deploy cannot be written")
    summary = json.loads(good_summary("a", 1000, 0.9, 10.0, "dice-x"))
    summary["footprint"]["int8"]["fits"] = {"ch32v003": True}
    write_summary(tmp_path / "s" / "0", json.dumps(summary))
    bad = write_summary(tmp_path / "s" / "1", "{ truncated")
    proc = subprocess.run(
        [*export, f"select_from=[{tmp_path / 's'}]", "mcu=ch32v003", f"out_dir={tmp_path}/d"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"warning: {bad} is unreadable") and "skipped" in lines[0]
    # the other run was read and selected (it has no checkpoint: that is the next line); a
    # run is the folder its summary was found in (issue 20 item 6), not the path it names
    selected = tmp_path / "s" / "0"
    assert proc.returncode == 2 and lines[-1].startswith(f"error: the selected run {selected} has")
