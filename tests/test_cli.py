"""``python src/train.py`` as users run it: multiruns, failures, bad input."""

from __future__ import annotations

import json

import pytest

from tinycvae.errors import ConfigError
from tinycvae.job import build

from conftest import TINY, compose_train, run_train


def summaries(root):
    (sweep,) = (root / "logs" / "multiruns").iterdir()
    return sweep, {
        int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")
    }


def test_the_readme_sweep_runs_four_jobs_in_their_own_folders(tmp_path):
    proc = run_train(["-m", "model.latent=1,10", "beta=1e-5,1", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep, jobs = summaries(tmp_path)
    assert sorted(jobs) == [0, 1, 2, 3]
    combos = {(j["config"]["model"]["latent"], j["config"]["beta"]) for j in jobs.values()}
    assert combos == {(1, 1e-5), (1, 1.0), (10, 1e-5), (10, 1.0)}
    assert len({j["wandb"]["id"] for j in jobs.values()}) == 4  # one W&B run per job
    assert {j["group"] for j in jobs.values()} == {sweep.name}  # grouped by sweep
    for num, job in jobs.items():
        run_dir = sweep / str(num)
        assert job["status"] == "ok"
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert len(list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert "4 of 4 jobs ok" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "logs"]  # cwd untouched


def test_a_failing_job_does_not_take_its_neighbours_down(tmp_path):
    proc = run_train(["-m", "optimizer.lr=1e30,0.01", "logger=none", *TINY], tmp_path)
    assert proc.returncode == 1
    _, jobs = summaries(tmp_path)
    assert jobs[0]["status"] == "failed: non-finite loss"
    assert jobs[1]["status"] == "ok" and "test/loss" in jobs[1]["metrics"]
    assert "failed: non-finite loss" in proc.stderr


@pytest.mark.parametrize(
    "override, named",
    [
        ("model.latent=0", "model.latent=0"),
        ("model.dim2=0", "model.dim2=0"),
        ("beta=-1", "beta=-1"),
        ("model.latent_mode=bypass", "model.latent=10"),
        ("beta=abc", "beta=abc"),
        ("model.latent=true", "model.latent=True"),
        ("optimizer.lr=-1", "optimizer"),
        ("data.scale_range=garbage", "data.scale_range=garbage"),
        ("trainer.accelerator=foo", "trainer.accelerator=foo"),
        ("seed=abc", "seed=abc"),
    ],
)
def test_bad_values_are_refused_by_name_before_any_work(tmp_path, override, named):
    """In-process: the job's checks (what the command runs first) name the value."""
    with pytest.raises(ConfigError) as err:
        build(compose_train([*TINY, override], tmp_path))
    assert named in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "data").exists()  # nothing rendered


def test_a_bad_value_exits_2_with_one_line_before_any_work(tmp_path):
    """The command line: the same refusal is one ``error:`` line and exit status 2."""
    proc = run_train([*TINY, "model.latent=true"], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert "model.latent=True is invalid; allowed: an integer >= 1" in line
    assert not (tmp_path / "data").exists()  # nothing rendered


def test_unknown_group_option_names_the_choices(tmp_path):
    proc = run_train([*TINY, "conditioning=film"], tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "film" in proc.stderr and "embed_add" in proc.stderr


def test_a_bad_job_in_a_multirun_stops_the_sweep_before_the_first_job(tmp_path):
    proc = run_train(["-m", "beta=1,-1", *TINY], tmp_path)
    assert proc.returncode == 2
    assert "beta=-1" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("logs/multiruns/*/*/summary.json"))
    assert not (tmp_path / "data").exists()


def test_seed_000s_size_table_is_one_command(tmp_path):
    tiny_data = [o for o in TINY if not o.startswith("model.dim")]
    proc = run_train(
        ["experiment=dice_size_table", *tiny_data, "metrics=none", "logger=none"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, jobs = summaries(tmp_path)
    widths = sorted(
        tuple(j["config"]["model"][f"dim{i}"] for i in range(1, 5)) for j in jobs.values()
    )
    assert len(widths) == 9 and widths[0] == (2, 2, 2, 2) and widths[-1] == (64, 64, 64, 64)
    assert {j["config"]["model"]["latent_mode"] for j in jobs.values()} == {"bypass"}
