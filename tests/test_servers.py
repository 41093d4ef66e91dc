"""The shared Optuna study on real servers: PostgreSQL (Optuna's RDB storage) and Redis
(Optuna's journal on Redis), as .ci/services.sh starts them (TINYCVAE_TEST_POSTGRES,
TINYCVAE_TEST_REDIS: URLs with a password). Two workers on one study, one of them killed
with -9 mid-trial and its trial retried by the other, pareto.py reading the study,
optuna-dashboard opening it; a server that is down or refuses the password is one line
that never shows the password."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tinycvae.errors import ConfigError
from tinycvae.search.storage import open_storage

from conftest import FAST_SEARCH, TRAIN

SERVERS = {
    "postgres": ("TINYCVAE_TEST_POSTGRES", "psycopg"),
    "redis": ("TINYCVAE_TEST_REDIS", "redis"),
}
FAST = [
    *FAST_SEARCH,
    # the URL from the environment: Hydra's own records keep the interpolation, not it
    "hydra.sweeper.storage=${oc.env:OPTUNA_STORAGE}",
]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def server_url(kind: str) -> str:
    variable, driver = SERVERS[kind]
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f'{variable} is not set (eval "$(sudo .ci/services.sh)" starts {kind})')
    pytest.importorskip(driver, reason=f"the {kind} driver: pip install -e '.[{kind}]'")
    return url


def password_of(url: str) -> str:
    found = re.search(r"://[^/@:]*:([^@]+)@", url)
    assert found, "the test servers are started with a password"
    return found.group(1)


def wrong_password(url: str) -> str:
    return url.replace(f":{password_of(url)}@", ":not-the-password-4711@")


@pytest.fixture(params=sorted(SERVERS))
def server(request) -> tuple[str, str]:
    return request.param, server_url(request.param)


@pytest.mark.parametrize("fault", ["wrong password", "server down"])
def test_a_refusing_or_absent_server_is_one_line_without_the_password(server, fault):
    kind, url = server
    bad = wrong_password(url)
    if fault == "server down":
        bad = re.sub(r"@127\.0\.0\.1:\d+", "@127.0.0.1:1", bad)
    with pytest.raises(ConfigError) as exc:
        open_storage(bad, study_name="s")
    text = str(exc.value)
    assert "\n" not in text and "not-the-password-4711" not in text
    assert text.startswith("hydra.sweeper.storage=") and ":***@127.0.0.1:" in text
    assert "cannot be opened" in text


def test_a_refused_password_stops_the_search_before_any_trial(tmp_path):
    url = server_url("postgres")
    env = {**os.environ, "TINYCVAE_ROOT": str(tmp_path), "OPTUNA_STORAGE": wrong_password(url)}
    proc = subprocess.run(
        [sys.executable, str(TRAIN), "-m", "hparams_search=dice_optuna", *FAST],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: hydra.sweeper.storage=postgresql://tinycvae_test:***@")
    assert "password authentication failed" in line and "not-the-password" not in line
    assert not list(tmp_path.rglob("summary.json"))


def _worker(root: Path, url: str, study: str, n: int) -> subprocess.Popen:
    env = {
        **os.environ, "TINYCVAE_ROOT": str(root), "TINYCVAE_DATA": str(root / f"data{n}"),
        "OPTUNA_STORAGE": url, "HYDRA_FULL_ERROR": "0",
    }  # fmt: skip
    args = ["-m", "hparams_search=dice_optuna", "hydra.sweeper.n_trials=4", *FAST]
    args += [f"hydra.sweeper.study_name={study}", f"hydra.sweep.dir={root / f'worker{n}'}"]
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *args],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # kill -9 takes the worker's whole process group
    )  # fmt: skip


def _running_trial(sweep: Path) -> bool:
    for summary in sweep.glob("*/summary.json"):
        try:
            if json.loads(summary.read_text())["status"] == "running":
                return True
        except (OSError, ValueError, KeyError):
            pass  # being written
    return False


def _kill_mid_trial(victim: subprocess.Popen, sweep: Path) -> None:
    deadline = time.monotonic() + 240
    try:
        while not _running_trial(sweep):
            assert victim.poll() is None, victim.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the worker never started a trial"
            time.sleep(0.05)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.communicate()


@pytest.mark.slow
def test_two_workers_one_killed_share_one_study_on_the_server(server, tmp_path):
    """Two workers start on one study; worker 1 is killed with -9 during its first
    trial. Worker 0 finishes the study: 4 complete trials, the killed trial failed (stale
    heartbeat) and its parameters run again; pareto.py reads the front from the server;
    the password is in no output and no file."""
    kind, url = server
    study_name = f"t_{kind}_{uuid.uuid4().hex[:8]}"
    survivor = _worker(tmp_path, url, study_name, 0)
    _kill_mid_trial(_worker(tmp_path, url, study_name, 1), tmp_path / "worker1")
    out, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-3000:]

    storage = open_storage(url, study_name=study_name, create=False)
    study = optuna.load_study(study_name=study_name, storage=storage.optuna)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    (killed,) = [int(p.name) for p in (tmp_path / "worker1").iterdir() if p.is_dir()]
    assert study.trials[killed].state == TrialState.FAIL
    (retry,) = [t for t in done if t.system_attrs.get("failed_trial") == killed]
    assert retry.params == study.trials[killed].params
    ran = sorted(int(p.parent.name) for p in (tmp_path / "worker0").glob("*/summary.json"))
    assert ran == sorted(t.number for t in done)  # worker 0 ran every finished trial
    secret = password_of(url)
    assert secret not in out + err
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".log", ".csv", ".md"):
            assert secret not in path.read_text(errors="replace"), path

    from pareto import main as pareto_main

    front = tmp_path / "front"
    argv = ["--optuna-storage", url, "--study", study_name, "--out", str(front)]
    assert pareto_main([*argv, "--wandb-mode", "disabled"]) == 0
    rows = list(csv.DictReader((front / "pareto.csv").open()))
    assert sum(r["status"] == "ok" for r in rows) == 4


def test_optuna_dashboard_opens_the_postgres_study(tmp_path):
    url = server_url("postgres")
    dashboard = shutil.which("optuna-dashboard") or pytest.skip("optuna-dashboard not installed")
    name = f"dash_{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=url, directions=["minimize"])
    study.add_trial(
        optuna.create_trial(
            params={"x": 1.0},
            distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
            values=[0.5],
        )
    )
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [dashboard, url, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "optuna-dashboard did not answer"
                time.sleep(0.3)
        assert name in [s["study_name"] for s in studies]
    finally:
        server.terminate()
        server.wait(timeout=10)
