"""hydra/launcher=slurm on a real SLURM cluster (the one-node cluster .ci/services.sh
starts), and what works without one: parsing sinfo and scontrol, the GPU rule, and the
one-line refusals before anything is submitted."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tinycvae.errors import ConfigError
from tinycvae.slurm import Partition, parse_scontrol, parse_sinfo, resolve_gpus

from conftest import ROOT, TINY, TRAIN, run_train

PARTITION = os.environ.get("TINYCVAE_TEST_PARTITION", "debug")
SLURM = ["-m", "hydra/launcher=slurm", f"hydra.launcher.partition={PARTITION}"]
FAST = ["logger=none", "metrics=none", *TINY]
NOISE = ("Bypassing sacct", "srun` command is available", "litlogger", "Traceback")
STUDY = "dice_dims_pareto"
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _cluster_missing() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not on PATH (a SLURM cluster: sudo .ci/services.sh starts one)"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo does not answer ({err})"
    if out.returncode != 0:
        return f"sinfo fails: {(out.stderr.strip() or 'no message').splitlines()[0]}"
    if PARTITION not in out.stdout.split():
        return f"no SLURM partition {PARTITION} (TINYCVAE_TEST_PARTITION)"
    return None


MISSING = _cluster_missing()
needs_cluster = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def summaries(sweep: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def the_sweep(root: Path) -> Path:
    (sweep,) = (root / "logs" / "multiruns").iterdir()
    return sweep


def job_logs(sweep: Path) -> str:
    return "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))


# --- without a cluster ----------------------------------------------------------------------


def test_sinfo_partitions_and_their_gpus():
    text = "debug*|(null)\ngpu|gpu:a100:4(S:0-1)\ngpu|gpu:a100:8,tmpdisk:100\ncpu|tmpdisk:10\n"
    parts = parse_sinfo(text)
    assert list(parts) == ["debug", "gpu", "cpu"]
    assert parts["debug"].default and not parts["debug"].gres
    assert parts["gpu"].gpus and not parts["cpu"].gpus
    assert parts["gpu"].gres == ["gpu:a100:4(S:0-1)", "gpu:a100:8", "tmpdisk:100"]
    assert resolve_gpus("auto", [parts["gpu"]], parts) == 1
    assert resolve_gpus("auto", [parts["debug"]], parts) is None
    assert resolve_gpus(2, [parts["gpu"]], parts) == 2
    assert resolve_gpus(None, [parts["gpu"]], parts) is None
    assert resolve_gpus(0, [parts["debug"]], parts) is None
    with pytest.raises(ConfigError) as exc:
        resolve_gpus(1, [parts["cpu"]], parts)
    assert str(exc.value) == (
        "hydra.launcher.gpus_per_node=1: partition cpu has no GPUs (sinfo lists its gres: "
        "tmpdisk:10); allowed: auto, null or 0 there, or a partition with GPUs (gpu)"
    )
    with pytest.raises(ConfigError, match="gpus_per_node=two is invalid"):
        resolve_gpus("two", [Partition("x")], parts)


def test_scontrol_states_stand_in_for_sacct():
    text = (
        "JobId=13 ArrayJobId=12 ArrayTaskId=1 JobState=CANCELLED NodeList=vm Reason=None\n"
        "JobId=12 ArrayJobId=12 ArrayTaskId=2-4,6%2 JobState=PENDING NodeList=(null)\n"
        "JobId=20 JobName=x JobState=COMPLETED NodeList=vm\n"
    )
    info = parse_scontrol(text)
    assert info["12_1"]["State"] == "CANCELLED"
    assert {k for k, v in info.items() if v["State"] == "PENDING"} == {
        "12_2", "12_3", "12_4", "12_6"
    }  # fmt: skip
    assert info["20"] == {"JobID": "20", "State": "COMPLETED", "NodeList": "vm"}


def test_no_sbatch_is_one_line(tmp_path):
    """A machine without SLURM: one line naming what is missing, exit 2, no sweep folder."""
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bare), "TINYCVAE_ROOT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(TRAIN), *SLURM, "beta=1e-5,1", *FAST],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: hydra/launcher=slurm needs SLURM's sbatch, sinfo, srun")
    assert not (tmp_path / "logs").exists()


# --- on the cluster -------------------------------------------------------------------------


@needs_cluster
@pytest.mark.parametrize(
    "override, message",
    [
        ("hydra.launcher.partition=nosuch", "error: hydra.launcher.partition=nosuch: SLURM "
         "has no partition nosuch; allowed: "),
        ("hydra.launcher.gpus_per_node=1", f"error: hydra.launcher.gpus_per_node=1: partition "
         f"{PARTITION} has no GPUs"),
        ("hydra.launcher.mem_gb=100000", "error: sbatch refused the array: sbatch: error: "),
    ],
)  # fmt: skip
def test_what_slurm_refuses_is_one_line_and_nothing_is_submitted(tmp_path, override, message):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    proc = run_train([*SLURM, override, "beta=1e-5,1", *FAST], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(message), line
    assert not list((tmp_path / "logs").glob("multiruns/*"))  # no sweep folder left
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert set(after.split()) <= set(before.split())  # nothing of ours queued


@needs_cluster
@pytest.mark.slow
def test_readme_slurm_sweep_runs_every_job_quietly_with_the_allocations_threads(tmp_path):
    """README: python src/train.py -m hydra/launcher=slurm hydra.launcher.partition=...
    (tiny sizes): every job ok, one thread each on its one allocated CPU, and no noise."""
    proc = run_train([*SLURM, "beta=1e-5,1", *FAST], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 of 2 jobs ok" in proc.stdout
    assert f"2 jobs on partition {PARTITION} (1 CPU, 0 GPUs each)" in proc.stdout
    sweep = the_sweep(tmp_path)
    jobs = summaries(sweep)
    assert sorted(jobs) == [0, 1] and {j["status"] for j in jobs.values()} == {"ok"}
    for job in jobs.values():
        assert job["threads"] == 1 and job["cpus"]["slurm"] == 1, job["cpus"]
    everything = proc.stdout + proc.stderr + job_logs(sweep)
    for noise in NOISE:
        assert noise not in everything, noise


@needs_cluster
@pytest.mark.slow
def test_a_failing_job_leaves_its_neighbour_and_setup_lines_run_first(tmp_path):
    setup = "hydra.launcher.setup=[echo tinycvae-setup-ran-on-$SLURMD_NODENAME]"
    proc = run_train([*SLURM, setup, "optimizer.lr=1e30,0.01", *FAST], tmp_path, timeout=600)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    sweep = the_sweep(tmp_path)
    jobs = summaries(sweep)
    assert jobs[0]["status"] == "failed: non-finite loss"
    assert jobs[1]["status"] == "ok" and "test/loss" in jobs[1]["metrics"]
    assert "1 of 2 jobs ok" in proc.stdout and "job 0 (SLURM " in proc.stdout
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    assert f"tinycvae-setup-ran-on-{node}" in job_logs(sweep)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@needs_cluster
@pytest.mark.slow
def test_scancel_of_an_array_task_is_recorded_and_ckpt_path_last_resumes_it(tmp_path):
    args = [*SLURM, *FAST, "trainer.max_epochs=2,150"]
    env = {**os.environ, "TINYCVAE_ROOT": str(tmp_path), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(tmp_path / "logs", proc, 120)
        sweep = the_sweep(tmp_path)
        _wait_for(sweep / "1" / "checkpoints" / "last.ckpt", proc, 300)
        (task,) = [p.name.rsplit("_", 1)[0] for p in sweep.glob(".submitit/*_1/*_submitted.pkl")]
        subprocess.run(["scancel", task], check=True)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    jobs = summaries(sweep)
    assert jobs[0]["status"] == "ok"
    assert jobs[1]["status"] == "failed: interrupted (SIGTERM)"
    assert "1 of 2 jobs ok" in out and "Traceback" not in err

    again = run_train([*args, f"hydra.sweep.dir={sweep}", "ckpt_path=last"], tmp_path, 600)
    assert again.returncode == 0, again.stderr[-3000:]
    jobs = summaries(sweep)
    assert jobs[1]["status"] == "ok" and jobs[1]["resumed_from"].endswith("last.ckpt")
    assert len(jobs[1]["resumed_at"]) == 1


@needs_cluster
@pytest.mark.slow
def test_the_optuna_worker_array_script_shares_one_study(tmp_path):
    """sweeps/optuna_workers.sbatch as a user submits it, with 2 array tasks: the workers
    run disjoint trials of one journal study, which ends complete, and pareto.py reads it."""
    fast = [
        "hydra.sweeper.n_trials=4", "objective=[mcu/int8/flash_bytes,val/loss]",
        "hydra.sweeper.direction=[minimize,minimize]",
        *[o for o in FAST if not o.startswith("model.dim")],
    ]  # fmt: skip
    env = {
        **os.environ, "TINYCVAE_ROOT": str(tmp_path), "TINYCVAE_REPO": str(ROOT),
        "PYTHON": sys.executable, "HYDRA_FULL_ERROR": "0",
    }  # fmt: skip
    script = ROOT / "sweeps" / "optuna_workers.sbatch"
    proc = subprocess.run(
        ["sbatch", "--wait", "--array=0-1", str(script), *fast],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    outputs = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert proc.returncode == 0, (proc.stderr + outputs)[-3000:]
    sweeps = sorted((tmp_path / "logs" / "multiruns").glob("dice_search_*_*"))
    assert [s.name.rsplit("_", 1)[1] for s in sweeps] == ["0", "1"]
    ran = [sorted(int(p.parent.name) for p in s.glob("*/summary.json")) for s in sweeps]
    journal = tmp_path / "logs" / "searches" / STUDY / "study.journal"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name=STUDY, storage=storage)
    done = sorted(t.number for t in study.trials if t.state == TrialState.COMPLETE)
    assert len(done) == 4 and sorted(ran[0] + ran[1]) == done  # disjoint, all of them

    from pareto import main as pareto_main

    out = tmp_path / "front"
    argv = ["--optuna-storage", str(journal), "--study", STUDY, "--out", str(out)]
    assert pareto_main([*argv, "--wandb-mode", "disabled"]) == 0
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
