"""SIGTERM / SIGHUP to a sweep's parent (issue 20, item 3): passed on to its jobs, each
job records ``failed: interrupted (…)``, the parent exits 128 + N, and no process of the
sweep survives (loky workers, resource trackers, wandb-core)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY, TRAIN

LONG = [*TINY, "metrics=none", "trainer.max_epochs=400"]


def start(args: list[str], root: Path) -> subprocess.Popen:
    env = {**os.environ, "TINYCVAE_ROOT": str(root), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *args], cwd=root, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def session(sid: int) -> list[str]:
    """The command lines of the processes still in session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getsid(int(entry.name)) == sid:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ProcessLookupError):
            continue
    return found


def wait_for_training(root: Path, proc: subprocess.Popen, jobs: int, timeout: float = 240):
    end = time.monotonic() + timeout
    while len(list(root.glob("logs/multiruns/*/*/checkpoints/last.ckpt"))) < jobs:
        if proc.poll() is not None or time.monotonic() > end:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"jobs did not start training: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)


def no_process_left(sid: int, timeout: float = 30) -> list[str]:
    end = time.monotonic() + timeout
    while (left := session(sid)) and time.monotonic() < end:
        time.sleep(0.5)
    if left:
        os.killpg(sid, signal.SIGKILL)
    return left


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, logger", [(signal.SIGTERM, "none"), (signal.SIGHUP, "wandb")], ids=["TERM", "HUP"]
)
def test_a_signal_to_a_joblib_sweeps_parent_is_recorded_by_every_job(tmp_path, sig, logger):
    """``python src/train.py -m … seed=1,2,3 & …; kill -TERM $!``: two jobs train in the
    pool, the third waits for a worker."""
    proc = start(["-m", *LONG, f"logger={logger}", "seed=1,2,3"], tmp_path)
    wait_for_training(tmp_path, proc, jobs=2)
    proc.send_signal(sig)  # the parent only, as `timeout` and `docker stop` do
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert no_process_left(proc.pid) == []
    assert "Traceback" not in err, err[-3000:]
    summaries = [
        json.loads(p.read_text()) for p in tmp_path.glob("logs/multiruns/*/*/summary.json")
    ]
    assert [s["status"] for s in summaries] == [f"failed: interrupted ({sig.name})"] * 3
    assert not list(tmp_path.glob("logs/multiruns/*/.tinycvae-signal"))


@pytest.mark.slow
def test_sigterm_to_an_optuna_search_fails_its_trial_and_queues_it_again(tmp_path):
    """The search on its default launcher (joblib): the running trial is marked FAIL (not
    left RUNNING to be recomputed after a grace period) and its parameters are queued."""
    import optuna
    from optuna.trial import TrialState

    journal = tmp_path / "study.journal"
    args = [
        "-m", "hparams_search=dice_optuna", f"hydra.sweeper.storage={journal}",
        "hydra.sweeper.n_trials=3", "logger=none", "metrics=none", "trainer.max_epochs=400",
        "objective=[mcu/int8/flash_bytes,val/loss]", "hydra.sweeper.direction=[minimize,minimize]",
        *(o for o in TINY if not o.startswith("model.dim") and "max_epochs" not in o),
    ]  # fmt: skip
    proc = start(args, tmp_path)
    wait_for_training(tmp_path, proc, jobs=1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err[-3000:]
    assert no_process_left(proc.pid) == []
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    trials = optuna.load_study(study_name="dice_dims_pareto", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"] == "failed: interrupted (SIGTERM)"
    assert trials[1].params == trials[0].params  # queued again, with its parameters
