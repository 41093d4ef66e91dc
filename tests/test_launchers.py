"""Hydra launchers (conf/hydra/launcher/): jobs in other processes still leave one folder
each with its summary.json, the sweep guard still reports failures, and the objective
still reaches the sweeper."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from hydra import compose, initialize_config_dir

from conftest import CONF, TINY, run_train

LAUNCHERS = {
    "local_parallel": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "local_submitit": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "slurm": "hydra_plugins.tinycvae_slurm.slurm_launcher.SlurmLauncher",
}


def jobs_of(root):
    (sweep,) = (root / "logs" / "multiruns").iterdir()
    return sweep, {
        int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")
    }


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_configs_compose_on_the_plugins_schemas(name):
    assert (CONF / "hydra" / "launcher" / f"{name}.yaml").is_file()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", [f"hydra/launcher={name}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == LAUNCHERS[name]
    if name == "slurm":
        for key in ("partition", "timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb"):
            assert key in launcher
        assert launcher.additional_parameters == {}
        assert launcher.gpus_per_node == "auto"  # follows the partition (sinfo)
    if name == "local_parallel":
        assert launcher.n_jobs == 2


def test_joblib_runs_jobs_in_parallel_worker_processes(tmp_path):
    proc = run_train(
        ["-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "beta=1e-5,1"]
        + ["metrics=none", *TINY],
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep, jobs = jobs_of(tmp_path)
    assert sorted(jobs) == [0, 1]
    assert {j["status"] for j in jobs.values()} == {"ok"}
    assert {j["config"]["beta"] for j in jobs.values()} == {1e-5, 1}
    assert {j["group"] for j in jobs.values()} == {sweep.name}  # HydraConfig in the worker
    assert len({j["wandb"]["id"] for j in jobs.values()}) == 2  # one W&B run per job
    for num in jobs:
        assert len(list((sweep / str(num) / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert "2 of 2 jobs ok" in proc.stdout


def test_joblib_failing_job_does_not_take_its_neighbour_down(tmp_path):
    proc = run_train(
        ["-m", "hydra/launcher=local_parallel", "optimizer.lr=1e30,0.01", "logger=none"]
        + ["metrics=none", *TINY],
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    _, jobs = jobs_of(tmp_path)
    assert jobs[0]["status"] == "failed: non-finite loss"
    assert jobs[1]["status"] == "ok" and "test/loss" in jobs[1]["metrics"]
    assert "1 of 2 jobs ok" in proc.stdout and "failed: non-finite loss" in proc.stderr


def test_submitit_local_executor_runs_each_job_in_a_subprocess(tmp_path):
    proc = run_train(
        ["-m", "hydra/launcher=local_submitit", "beta=1e-5,1", "logger=none", "metrics=none"]
        + TINY,
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep, jobs = jobs_of(tmp_path)
    assert sorted(jobs) == [0, 1]
    assert {j["status"] for j in jobs.values()} == {"ok"}
    assert (sweep / ".submitit").is_dir()  # submitit's own pickles and logs, beside the jobs
    assert "2 of 2 jobs ok" in proc.stdout


def test_objective_comes_back_from_joblib_workers_to_the_sweeper(tmp_path):
    """Optuna hands a batch of two trials to the joblib launcher; each worker's return
    value (mcu/int8/flash_bytes, gen/acc from its summary) must reach the study."""
    tiny = [o for o in TINY if not o.startswith("model.dim")]
    proc = run_train(
        ["-m", "hparams_search=dice_optuna", "hydra/launcher=local_parallel"]
        + ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "logger=none", *tiny],
        tmp_path,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep, jobs = jobs_of(tmp_path)
    assert sorted(jobs) == [0, 1]
    told = {(j["metrics"]["mcu/int8/flash_bytes"], j["metrics"]["gen/acc"]) for j in jobs.values()}
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["solutions"]
    for solution in results["solutions"]:
        values = tuple(solution["values"])
        assert any(all(math.isclose(a, b) for a, b in zip(values, t)) for t in told)
