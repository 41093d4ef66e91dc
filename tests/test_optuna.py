"""Multi-objective Optuna search (conf/hparams_search/dice_optuna.yaml) on tiny settings."""

from __future__ import annotations

import json

import yaml
from hydra import compose, initialize_config_dir

from conftest import CONF, TINY, run_train

SEARCH = "hparams_search=dice_optuna"
# TINY without its widths: the search draws model.dim1..dim4 itself.
TINY_SEARCH = [o for o in TINY if not o.startswith("model.dim")]
TWO_TRIALS = ["-m", SEARCH, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1"]


def sweep_of(root):
    (sweep,) = (root / "logs" / "multiruns").iterdir()
    jobs = {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    return sweep, jobs


def test_search_config_composes_as_nsga2_with_two_directions():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", [SEARCH], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("optuna_sweeper.OptunaSweeper")
    assert sweeper.sampler._target_ == "optuna.samplers.NSGAIISampler"
    assert list(sweeper.direction) == ["minimize", "maximize"]
    assert sweeper.storage is None
    assert sweeper.sampler.population_size < sweeper.n_trials
    assert len(cfg.objective) == len(sweeper.direction)
    assert {f"model.dim{i}" for i in range(1, 5)} <= set(sweeper.params)
    assert cfg.model.latent_mode == "bypass" and cfg.model.latent == 1


def test_two_trials_run_and_leave_the_pareto_front(tmp_path):
    proc = run_train([*TWO_TRIALS, "logger=none", *TINY_SEARCH], tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep, jobs = sweep_of(tmp_path)
    assert sorted(jobs) == [0, 1]
    assert {j["status"] for j in jobs.values()} == {"ok"}
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    # multi-objective: the plugin writes the study's best_trials as `solutions`
    solutions = results["solutions"]
    assert 1 <= len(solutions) <= 2
    told = {
        (j["metrics"]["mcu/int8/flash_bytes"], round(j["metrics"]["gen/acc"], 6))
        for j in jobs.values()
    }
    for s in solutions:
        assert set(s["params"]) == {f"model.dim{i}" for i in range(1, 5)}
        assert (s["values"][0], round(s["values"][1], 6)) in told
    assert "2 of 2 jobs ok" in proc.stdout


def test_failed_trials_are_recorded_and_the_search_still_ends_with_its_report(tmp_path):
    """A failed job returns no value: Optuna marks the trial failed (with NaN, Optuna 2.x
    and hydra-optuna-sweeper 1.3 would stop the whole search with a traceback)."""
    proc = run_train(
        [*TWO_TRIALS, "optimizer.lr=1e30", "logger=none", "metrics=none", *TINY_SEARCH],
        tmp_path,
        timeout=180,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    sweep, jobs = sweep_of(tmp_path)
    assert {j["status"] for j in jobs.values()} == {"failed: non-finite loss"}
    assert len(jobs) == 2  # the first failure did not stop the search
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["solutions"] == []
    assert "0 of 2 jobs ok" in proc.stdout
