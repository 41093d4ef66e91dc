"""Multi-objective Optuna search (conf/hparams_search/dice_optuna.yaml) on tiny settings:
tinycvae's sweeper (hydra/sweeper=optuna_study) on a current Optuna, a stored study that
survives kill -9, two workers on one study, and the study as a Pareto source."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from tinycvae.errors import ConfigError
from tinycvae.search.space import search_space
from tinycvae.search.storage import open_storage
from tinycvae.search.study import open_study
from tinycvae.search.trials import SURPLUS_ATTR

from conftest import CONF, FAST_SEARCH, TINY, TRAIN, run_train

SEARCH = "hparams_search=dice_optuna"
STUDY = "dice_dims_pareto"
# TINY without its widths: the search draws model.dim1..dim4 itself.
TINY_SEARCH = [o for o in TINY if not o.startswith("model.dim")]
TWO_TRIALS = ["-m", SEARCH, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1"]
FAST = FAST_SEARCH
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def sweep_of(root):
    (sweep,) = (root / "logs" / "multiruns").iterdir()
    jobs = {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    return sweep, jobs


def journal_study(root: Path, name: str = STUDY) -> optuna.Study:
    path = root / "logs" / "searches" / name / "study.journal"
    assert path.is_file(), f"no journal at {path}"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage)


def test_search_config_composes_as_nsga2_with_two_directions():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", [SEARCH], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.tinycvae_optuna.optuna_sweeper.OptunaSweeper"
    assert sweeper.sampler._target_ == "optuna.samplers.NSGAIISampler"
    assert list(sweeper.direction) == ["minimize", "maximize"]
    assert sweeper.storage == "auto" and sweeper.study_name == STUDY
    assert sweeper.sampler.population_size < sweeper.n_trials
    assert len(cfg.objective) == len(sweeper.direction)
    assert {f"model.dim{i}" for i in range(1, 5)} <= set(sweeper.params)
    assert cfg.model.latent_mode == "bypass" and cfg.model.latent == 1


def test_hydra_sweeps_map_to_optuna_distributions():
    space, fixed = search_space(
        {"model.dim1": "choice(2, 4)", "model.dim2": "range(2, 8, 2)", "beta": "1.0"},
        [
            "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
            "model.latent=int(interval(1, 4))",
            "beta=interval(0, 1)",
            "model.dim1=choice(8, 16)",  # the command line wins over params
            "debug=smoke",
        ],
    )
    assert space["model.dim1"] == CategoricalDistribution([8, 16])
    assert space["model.dim2"] == IntDistribution(2, 6, step=2)  # Hydra's stop is exclusive
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["model.latent"] == IntDistribution(1, 4)
    assert space["beta"] == FloatDistribution(0.0, 1.0)  # the command line wins over params
    assert fixed == ["debug=smoke"]


def test_two_trials_run_and_leave_the_pareto_front(tmp_path):
    proc = run_train([*TWO_TRIALS, "logger=none", *TINY_SEARCH], tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep, jobs = sweep_of(tmp_path)
    assert sorted(jobs) == [0, 1]  # job folders are named by trial number
    assert {j["status"] for j in jobs.values()} == {"ok"}
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and results["study_name"] == STUDY
    # multi-objective: the study's best_trials as `solutions`
    solutions = results["solutions"]
    assert 1 <= len(solutions) <= 2
    told = {
        (j["metrics"]["mcu/int8/flash_bytes"], round(j["metrics"]["gen/acc"], 6))
        for j in jobs.values()
    }
    for s in solutions:
        assert set(s["params"]) == {f"model.dim{i}" for i in range(1, 5)}
        assert (s["values"][0], round(s["values"][1], 6)) in told
    # the study is stored (storage=auto) and printed, and the front written as pareto.py does
    study = journal_study(tmp_path)
    assert study.metric_names == ["mcu/int8/flash_bytes", "gen/acc"]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.trials[0].user_attrs["run_dir"] == str(sweep / "0")
    assert f"Pareto front of study {STUDY} (mcu/int8/flash_bytes ↓, gen/acc ↑)" in proc.stdout
    for name in ("pareto.csv", "pareto.md", "pareto.png"):
        assert (sweep / name).is_file()
    assert "2 of 2 jobs ok" in proc.stdout


def test_failed_trials_are_recorded_and_the_search_still_ends_with_its_report(tmp_path):
    """A failed job returns no value: Optuna marks the trial failed and the search goes on."""
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
    assert [t.state for t in journal_study(tmp_path).trials] == [TrialState.FAIL] * 2
    assert "0 of 2 jobs ok" in proc.stdout


def _popen(args: list[str], root: Path, data: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "TINYCVAE_ROOT": str(root),
        "TINYCVAE_DATA": str(data),
        "HYDRA_FULL_ERROR": "0",
    }
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: kill -9 takes all of it
    )


def test_a_search_killed_mid_trial_resumes_from_its_storage(tmp_path):
    """kill -9 during trial 1, then the same command: the finished trial is kept, the killed
    one is failed (stale heartbeat) and its parameters run again, and the study ends with
    exactly n_trials trials, each in its own folder."""
    args = ["-m", SEARCH, "hydra.sweeper.n_trials=3", *FAST]
    proc = _popen(args, tmp_path, tmp_path / "data")
    deadline = time.monotonic() + 150
    try:
        while not list((tmp_path / "logs" / "multiruns").glob("*/1")):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "trial 1 never started"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    (first,) = (tmp_path / "logs" / "multiruns").iterdir()
    assert (first / "0" / "summary.json").is_file()

    again = run_train(args, tmp_path, timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 of 3 trials already there" in again.stdout or "2 of 3" in again.stdout
    study = journal_study(tmp_path)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3
    killed = study.trials[1]
    assert killed.state == TrialState.FAIL
    (retry,) = [t for t in done if t.system_attrs.get("failed_trial") == 1]
    assert retry.params == killed.params  # the killed slot ran again, with its parameters
    run_dirs = [t.user_attrs["run_dir"] for t in done]
    assert len(set(run_dirs)) == 3 and all(Path(d, "summary.json").is_file() for d in run_dirs)
    assert 0 in {t.number for t in done}  # the trial finished before the kill was not redone
    folders = [p.name for p in (tmp_path / "logs" / "multiruns").glob("*/*") if p.is_dir()]
    assert len(folders) == len(set(folders))  # no two jobs share a trial folder


def test_two_workers_share_one_sqlite_study_and_pareto_reads_it(tmp_path, capsys):
    db = tmp_path / "search.db"
    args = ["-m", SEARCH, "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage=sqlite:///{db}"]
    workers = [_popen([*args, *FAST], tmp_path, tmp_path / f"data{i}") for i in range(2)]
    outs = [w.communicate(timeout=240) for w in workers]
    for w, (_out, err) in zip(workers, outs):
        assert w.returncode == 0, err[-2000:]
    ran = [int(out.split("this process ran ")[1].split()[0]) for out, _ in outs]
    assert sum(ran) == 4
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    study = optuna.load_study(study_name=STUDY, storage=storage)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    # a trial asked past n_trials by a racing worker is marked so and never run
    assert all(SURPLUS_ATTR in t.user_attrs for t in study.trials if t not in done)
    sweeps = sorted((tmp_path / "logs" / "multiruns").iterdir())
    assert len(sweeps) == 2
    numbers = [int(p.parent.name) for s in sweeps for p in s.glob("*/summary.json")]
    assert sorted(numbers) == sorted(t.number for t in done)  # disjoint: one worker each

    from pareto import main as pareto_main

    out = tmp_path / "front"
    argv = ["--optuna-storage", f"sqlite:///{db}", "--study", STUDY, "--out", str(out)]
    assert pareto_main([*argv, "--wandb-mode", "disabled"]) == 0
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    # pareto.csv writes 4 significant digits
    assert sorted(float(r["flash_bytes"]) for r in rows) == sorted(
        float(f"{t.values[0]:.4g}") for t in done
    )


def _fake_study(path: Path, name: str = "s") -> None:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["minimize", "maximize"]
    )
    study.set_metric_names(["mcu/int8/flash_bytes", "gen/acc"])
    dist = {f"model.dim{i}": CategoricalDistribution([2, 4, 8]) for i in range(1, 5)}
    for flash, acc, d in [(4000, 0.5, 2), (5000, 0.9, 4), (7000, 0.8, 8)]:
        study.add_trial(
            optuna.create_trial(
                params={k: d for k in dist}, distributions=dist, values=[flash, acc]
            )
        )
    study.add_trial(
        optuna.create_trial(
            state=TrialState.FAIL,
            params={k: 2 for k in dist},
            distributions=dist,
            user_attrs={"fail_reason": "the job returned no value"},
        )
    )


def test_pareto_reads_a_study_as_a_source(tmp_path, capsys):
    from pareto import main as pareto_main

    journal = tmp_path / "searches" / "s" / "study.journal"
    journal.parent.mkdir(parents=True)
    _fake_study(journal)
    argv = ["--optuna-storage", str(journal), "--study", "s", "--wandb-mode", "disabled"]
    assert pareto_main(argv) == 0
    out = capsys.readouterr().out
    assert "trial 2" in out and "Failed runs" in out
    table = list(csv.DictReader((journal.parent / "pareto.csv").open()))
    assert [r["status"] for r in table].count("failed: the job returned no value") == 1
    rows = {r["dims"]: r for r in table if r["status"] == "ok"}
    assert rows["2_2_2_2"]["front_acc"] == "True"  # written beside the journal by default
    assert rows["4_4_4_4"]["front_acc"] == "True"
    assert rows["8_8_8_8"]["front_acc"] == "False"  # bigger and worse than 4_4_4_4
    assert float(rows["4_4_4_4"]["flash_bytes"]) == 5000 and rows["4_4_4_4"]["acc"] == "0.9"

    with pytest.raises(SystemExit) as exc:
        pareto_main([*argv[:2], "--study", "nosuch", "--wandb-mode", "disabled"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --study=nosuch: no such study in journal {journal}; allowed: s"
    with pytest.raises(SystemExit) as exc:
        pareto_main(["--optuna-storage", str(tmp_path / "missing.journal")])
    assert exc.value.code == 2
    assert "no such journal file" in capsys.readouterr().err
    assert not (tmp_path / "missing.journal").exists()  # reading creates nothing


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nosuchdb://host/x", "cannot be opened"),
        ("postgresql+nosuchdriver://u@127.0.0.1:1/x", "cannot be opened"),
        ("sqlite://", "an SQLite storage needs a file"),
        ("{dir}", "is a folder"),
        ("{sqlite_as_journal}", "is an SQLite database, not a journal file"),
        ("{not_a_journal}", "is not an Optuna journal"),
    ],
)
def test_a_bad_storage_is_one_line_naming_it(tmp_path, spec, message):
    sqlite_file = tmp_path / "x.db"
    optuna.storages.RDBStorage(f"sqlite:///{sqlite_file}")
    (tmp_path / "notes.txt").write_text("not json\nat all\n")
    spec = spec.format(
        dir=tmp_path, sqlite_as_journal=sqlite_file, not_a_journal=tmp_path / "notes.txt"
    )
    with pytest.raises(ConfigError) as exc:
        open_storage(spec, study_name="s")
    text = str(exc.value)
    assert message in text and "\n" not in text
    assert text.startswith(f"hydra.sweeper.storage={spec}")


def test_an_existing_study_with_other_objectives_or_a_missing_one_is_refused(tmp_path):
    storage = open_storage(str(tmp_path / "s.journal"), study_name="s")
    open_study(storage, study_name="s", directions=["minimize"], metric_names=["val/loss"])
    with pytest.raises(ConfigError, match=r"has objectives \[minimize val/loss\]; this search"):
        open_study(
            storage,
            study_name="s",
            directions=["minimize", "maximize"],
            metric_names=["mcu/int8/flash_bytes", "gen/acc"],
        )
    with pytest.raises(ConfigError, match="has objectives"):
        open_study(storage, study_name="s", directions=["minimize"], metric_names=["gen/acc"])
    with pytest.raises(ConfigError, match=r"study_name=t: no such study in .*; allowed: s$"):
        open_study(storage, study_name="t", directions=["minimize"], metric_names=None, resume=True)
    with pytest.raises(ConfigError, match="already exists"):
        open_study(
            storage, study_name="s", directions=["minimize"], metric_names=None, resume=False
        )
    # the same objectives: the study is continued
    study = open_study(storage, study_name="s", directions=["minimize"], metric_names=["val/loss"])
    assert study.study_name == "s"


def test_bad_storage_on_the_command_line_stops_before_any_trial(tmp_path):
    proc = run_train(
        ["-m", SEARCH, "hydra.sweeper.storage=nosuchdb://x/y", *FAST], tmp_path, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: hydra.sweeper.storage=nosuchdb://x/y cannot be opened")
    assert "allowed: auto" in lines[-1]
    assert not list((tmp_path / "logs").rglob("summary.json"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_serves_a_study_file(tmp_path):
    """README: `optuna-dashboard logs/searches/<study>/study.journal` opens the study."""
    dashboard = shutil.which("optuna-dashboard") or pytest.skip("optuna-dashboard not installed")
    journal = tmp_path / "study.journal"
    _fake_study(journal, name=STUDY)
    port = _free_port()
    server = subprocess.Popen(
        [dashboard, str(journal), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "optuna-dashboard did not answer"
                time.sleep(0.3)
        assert [s["study_name"] for s in studies["study_summaries"]] == [STUDY]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=5) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        server.terminate()
        server.wait(timeout=10)


def _sweeper(tmp_path, **settings):
    from omegaconf import OmegaConf

    from tinycvae.search.loop import StudySweeper

    base = dict(
        sampler=None,
        direction=["minimize", "maximize"],
        study_name=STUDY,
        storage="auto",
        resume=None,
        n_trials=3,
        n_jobs=1,
        params={"model.dim1": "choice(2, 4)"},
        heartbeat_interval=10,
        grace_period=60,
        max_retry=2,
    )
    sweeper = StudySweeper(**{**base, **settings})
    sweeper.config = OmegaConf.create(
        {"objective": ["mcu/int8/flash_bytes", "gen/acc"], "paths": {"log_dir": str(tmp_path)}}
    )
    return sweeper


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"resume": True}, f"study_name={STUDY}: no such study (hydra.sweeper.resume=true, and "),
        ({"direction": ["minimize"]}, "direction has 1 entries for objective="),
        ({"direction": ["down", "up"]}, "allowed: minimize or maximize"),
        ({"n_trials": 0}, "n_trials=0: allowed: an integer >= 1"),
        ({"params": {"beta": "1.0"}}, "has nothing to search"),
        ({"study_name": "a/b"}, "study_name=a/b: allowed: a non-empty name without /"),
        ({"storage": "sqlite://"}, "an SQLite storage needs a file"),
    ],
)
def test_bad_search_settings_are_refused_before_any_trial(tmp_path, settings, message):
    with pytest.raises(ConfigError) as exc:
        _sweeper(tmp_path, **settings).prepare([])
    assert message in str(exc.value)
    assert not (tmp_path / "searches").exists()  # nothing created


def test_the_default_storage_is_a_journal_under_logs_searches(tmp_path):
    study, storage, space, fixed = _sweeper(tmp_path).prepare(["debug=smoke"])
    assert storage.path == tmp_path / "searches" / STUDY / "study.journal"
    assert storage.path.is_file() and study.study_name == STUDY
    assert set(space) == {"model.dim1"} and fixed == ["debug=smoke"]
    assert study.metric_names == ["mcu/int8/flash_bytes", "gen/acc"]
