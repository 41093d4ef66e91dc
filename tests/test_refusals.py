"""Issue 20 items 4, 8 and 10: a refused command leaves every file of a running or
finished job byte for byte, refuses before any work, and leaves no folder or temp file.
Process-level behaviour runs as the user's command, in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tinycvae.models.size as size
from tinycvae.cache import load_or_build
from tinycvae.data.dice import dice_spec
from tinycvae.errors import ConfigError
from tinycvae.job import build
from tinycvae.models import build_cvae

from conftest import ROOT, TINY, run_train

QUIET = [*TINY, "logger=none", "metrics=none"]
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # W&B's format, no account's key


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "TINYCVAE_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *args],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"ended early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < end, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)


# 4. The refused command runs its checks before Hydra writes .hydra/ (RunGuard).
@pytest.mark.slow
def test_a_refused_command_leaves_a_running_and_a_finished_job_byte_for_byte(tmp_path):
    folder = tmp_path / "runs" / "hy"
    first = start([*QUIET, "trainer.max_epochs=5000", f"hydra.run.dir={folder}"], tmp_path)
    try:
        wait_for(folder / "checkpoints" / "last.ckpt", first)
        record = tree(folder / ".hydra")
        refused = run_train(
            ["model=mlp", "beta=0.5", "data.batch_size=7", f"hydra.run.dir={folder}"], tmp_path
        )
        assert "is in use by a running job" in one_error_line(refused)
        assert tree(folder / ".hydra") == record  # the running job's record, as it wrote it
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    finished = tree(folder)
    again = run_train([*QUIET, "beta=0.5", f"hydra.run.dir={folder}"], tmp_path)
    assert "already holds checkpoints" in one_error_line(again)
    assert tree(folder) == finished  # every file of the finished job, byte for byte


@pytest.mark.slow
def test_a_refused_re_sweep_leaves_the_finished_sweep_byte_for_byte(tmp_path):
    sweep = tmp_path / "multiruns" / "s"
    args = ["-m", *QUIET, "hydra/launcher=basic", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    done = run_train(args, tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    finished = tree(sweep)
    assert "multirun.yaml" in finished and "1/.hydra/overrides.yaml" in finished
    refused = run_train([*args[:-2], "seed=2,3", f"hydra.sweep.dir={sweep}"], tmp_path)
    line = one_error_line(refused)
    assert line.startswith("error: job [") and "seed=2" in line
    assert "already holds checkpoints" in line
    assert tree(sweep) == finished


# 8. Every check that needs no data comes before any work; 10. and leaves no folder.
@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["logger=wandb"], {"WANDB_API_KEY": "sk-" + "x" * 12}, "WANDB_API_KEY is malformed"),
    ],
    ids=["bad-key"],
)
def test_a_bad_setting_is_one_line_before_any_work(tmp_path, monkeypatch, args, env, expected):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    proc = run_train([*QUIET, *args], tmp_path, timeout=180)
    line = one_error_line(proc)
    assert expected in line
    for value in env.values():
        assert value not in proc.stdout + proc.stderr  # a key never appears
    assert list(tmp_path.iterdir()) == []  # no run folder, no data folder


def test_wandb_online_needs_a_well_formed_key(tiny_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    no_netrc = lambda: bool(os.environ.get("WANDB_API_KEY"))  # noqa: E731 - ~/.netrc aside
    monkeypatch.setattr("tinycvae.tracking.has_wandb_credentials", no_netrc)
    with pytest.raises(ConfigError, match="^logger.wandb.mode=online needs a W&B API key"):
        build(tiny_cfg("logger.wandb.mode=online", logger="wandb"))
    monkeypatch.setenv("WANDB_API_KEY", "not a key")
    for mode in ("online", "auto"):
        with pytest.raises(ConfigError, match=f"^logger.wandb.mode={mode}: WANDB_API_KEY is mal"):
            build(tiny_cfg(f"logger.wandb.mode={mode}", logger="wandb"))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="mode=online: the W&B server http://127.0.0.1:9 can"):
        build(tiny_cfg("logger.wandb.mode=online", logger="wandb"))


def test_seeds_out_of_every_librarys_range_are_refused(tiny_cfg):
    for seed in (-1, 99999999999, 1.5):
        with pytest.raises(ConfigError, match=f"^seed={seed} is invalid; allowed: an integer"):
            build(tiny_cfg(f"seed={seed}"))
    # a quoted number is said to be a string (the range is named all the same)
    with pytest.raises(ConfigError, match="^seed='7' is a string .* allowed: an integer from 0"):
        build(tiny_cfg("seed='7'"))
    build(tiny_cfg("seed=4294967295"))  # the largest every seeded library accepts


def test_a_model_too_big_for_the_memory_is_refused_before_it_is_built(tiny_cfg, monkeypatch):
    # 90 G weights in one conv: built for real, this would take 360 GB and crash
    with pytest.raises(ConfigError, match="parameters and needs about .* allowed: at most"):
        build(tiny_cfg("model.dim1=100000", "model.dim2=100000"))
    monkeypatch.setattr(size, "device_memory", lambda device: 10**8)  # a 100 MB machine
    with pytest.raises(ConfigError) as err:
        build(tiny_cfg("model.dim1=1000", "model.dim2=1000"))  # 9 M weights: 144 MB of state
    assert str(err.value).startswith("the model has 18,1")
    assert "allowed: at most 100 MB, the memory of cpu here" in str(err.value)
    params, need = size.training_bytes(
        lambda spec: build_cvae(spec, "conv", dim1=8, dim2=8, dim3=16, dim4=16, latent=10),
        dice_spec(32),
        128,
    )
    assert 10_000 < params < 40_000 and need > 16 * params  # activations counted too


def test_the_training_seed_repeats_with_the_size_check(tiny_cfg):
    a = build(tiny_cfg("seed=3")).model.state_dict()
    torch.manual_seed(0)
    b = build(tiny_cfg("seed=3")).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_data_folder_that_is_a_file_is_refused(tiny_cfg, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TINYCVAE_DATA", str(blocker))
    cfg = tiny_cfg()
    cfg.paths.data_dir = str(blocker)
    with pytest.raises(ConfigError, match=f"^TINYCVAE_DATA={blocker} cannot be written"):
        build(cfg)


@pytest.mark.slow
def test_wandb_unreachable_with_a_key_logs_offline_with_one_line(tmp_path):
    env = {
        **os.environ,
        "TINYCVAE_ROOT": str(tmp_path),
        "WANDB_API_KEY": FAKE_KEY,
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens: refused at once
        "HYDRA_FULL_ERROR": "0",
    }
    env.pop("WANDB_MODE")
    start_s = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), *TINY, "logger=wandb", "metrics=none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "cannot be reached" in ln]
    assert lines == [
        "warning: W&B server http://127.0.0.1:9 cannot be reached (127.0.0.1:9: Connection "
        "refused): logging offline; upload later with `wandb sync <run folder>/wandb/"
        "offline-run-*`"
    ]
    assert time.monotonic() - start_s < 200  # not wandb.init's ~100 s wait and traceback
    (run_dir,) = (tmp_path / "logs" / "runs").iterdir()
    assert list((run_dir / "wandb").glob("offline-run-*"))
    everything = (
        proc.stdout
        + proc.stderr
        + "".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())
    )
    assert FAKE_KEY not in everything


def test_evaluate_refuses_a_missing_checkpoint_before_the_evaluator(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "evaluate.py"), "ckpt_path=/nonexistent.ckpt"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={**os.environ, "TINYCVAE_ROOT": str(tmp_path)},
    )  # fmt: skip
    assert one_error_line(proc) == (
        "error: ckpt_path=/nonexistent.ckpt does not exist; allowed: a checkpoint a training "
        "run wrote (<run folder>/checkpoints/best.ckpt)"
    )
    assert list(tmp_path.iterdir()) == []  # no data rendered, no evaluator trained


# 10. A job refused on the way (data files missing) leaves no folder either.
def test_missing_data_files_leave_no_run_folder(tmp_path):
    (tmp_path / "data").mkdir()
    proc = run_train(["debug=smoke", "logger=none", "metrics=none", "data=mnist"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]  # after Lightning's own notes of the start
    assert last.startswith("error: ") and "MNIST" in last
    assert not (tmp_path / "logs").exists()


# 10. A writer killed mid-write leaves a temp file; the next reader removes it.
SLOW_WRITER = """
import sys, time
from pathlib import Path
from tinycvae.disk import write_atomic

def slow(fh):  # a cache writer that dies half-way (the test kills it with -9)
    fh.write(b"half a cache file")
    fh.flush()
    time.sleep(600)

write_atomic(Path(sys.argv[1]), slow)
"""


def test_a_temp_file_of_a_killed_writer_is_removed_by_the_next_reader(tmp_path):
    cache = tmp_path / "cache" / "thing.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(cache)], env=env)
    tmp = cache.with_name(f".thing.pt.{writer.pid}.tmp")
    wait_for(tmp, writer, timeout=120)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert tmp.exists()  # what kill -9 leaves
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = cache.with_name(f".thing.pt.{sleeper.pid}.tmp")  # a live writer's
        live.write_bytes(b"half")
        value = load_or_build(cache, lambda p: torch.load(p), lambda: (7, 7), "building")
        assert value == 7 and not tmp.exists() and live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
