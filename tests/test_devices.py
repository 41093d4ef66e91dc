"""The one device rule (tinycvae.devices): commands resolve their device once, every stage
runs where its model is, checkpoints move between devices. The GPU tests run wherever
CUDA is present and are skipped, with the reason, where it is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tinycvae import devices, quality_stage
from tinycvae.commands import train
from tinycvae.errors import ConfigError

from conftest import ROOT, TINY, run_train

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def test_resolve_names_the_device_and_refuses_unknown_settings():
    assert devices.resolve("cpu", "k") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert devices.resolve("auto", "k") == expected
    for bad in ("tpu", "cuda:x", "gpu0"):
        with pytest.raises(ConfigError, match=f"k={bad} is unknown; allowed: auto, cpu, gpu"):
            devices.resolve(bad, "k")


@CPU_ONLY
@pytest.mark.parametrize("setting", ["gpu", "cuda", "cuda:1"])
def test_a_gpu_on_a_machine_without_one_is_refused(setting):
    with pytest.raises(ConfigError, match=f"k={setting}: this machine has no GPU"):
        devices.resolve(setting, "k")


@CPU_ONLY
@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_trainer_accelerator_gpu_without_a_gpu_is_one_line_before_any_work(tmp_path, script):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / script), "trainer.accelerator=gpu", *TINY],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TINYCVAE_ROOT": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: trainer.accelerator=gpu: this machine has no GPU")
    assert list(tmp_path.iterdir()) == []  # nothing rendered, no run folder left


def test_cpu_threads_share_the_cores_among_concurrent_jobs():
    cores = min(devices.allocated_cpus().values())  # the CPUs this process may use
    assert devices.cpu_threads("auto", 1) == cores
    assert devices.cpu_threads("auto", 2) == max(1, cores // 2)
    assert devices.cpu_threads("auto", 10 * cores) == 1
    assert devices.cpu_threads(3) == 3
    with pytest.raises(ConfigError, match="threads=0 is invalid"):
        devices.cpu_threads(0)


def test_the_job_places_model_data_and_evaluator_after_lightning_hands_them_back(
    tiny_cfg, monkeypatch
):
    """Lightning returns the module on the CPU after fit/test (the GPU failure of every
    sweep job): the quality stage must find model, data and evaluator on the job's device."""
    seen = {}
    real_stage = train.score_quality

    def spy(job, evaluator, best, loggers, summary):
        seen["model"] = devices.device_of(job.module.model)
        seen["data"] = job.datamodule.splits.test.images.device
        seen["evaluator"] = devices.device_of(evaluator.evaluator)
        return real_stage(job, evaluator, best, loggers, summary)

    monkeypatch.setattr(train, "score_quality", spy)
    summary = train.run(tiny_cfg(metrics="default"))
    assert summary["status"] == "ok", summary["status"]
    assert summary["device"] == "cpu" and summary["threads"] >= 1
    assert set(seen.values()) == {devices.resolve("auto", "k")}


def test_a_checkpoint_loads_onto_any_device(tiny_cfg):
    from tinycvae.checkpoints import load_model

    summary = train.run(tiny_cfg())
    model, _ = load_model(summary["checkpoints"]["best"], "cpu")
    assert devices.device_of(model) == torch.device("cpu")
    if torch.cuda.is_available():
        model, _ = load_model(summary["checkpoints"]["best"], "cuda")
        assert devices.device_of(model).type == "cuda"


def test_out_of_memory_fails_the_job_and_keeps_its_checkpoints(tiny_cfg, monkeypatch):
    """(Raised by hand: the record is the same on any device.) The job returns instead of
    raising, so a sweep's next job runs."""

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(quality_stage, "evaluate_quality", oom)
    summary = train.run(tiny_cfg(metrics="default"))
    assert summary["status"].startswith("failed: metrics: CUDA out of memory")
    assert set(summary["checkpoints"]) == {"best", "last"}


# --- on a GPU -------------------------------------------------------------------------


@GPU
def test_gpu_multirun_with_metrics_ends_all_ok_with_the_cpu_keys(tmp_path):
    args = ["-m", "model.latent=1,10", "beta=1e-5,1", *TINY, "logger=wandb"]
    for where in ("gpu", "cpu"):
        (tmp_path / where).mkdir()
    gpu = run_train([*args, "trainer.accelerator=gpu"], tmp_path / "gpu", timeout=900)
    assert gpu.returncode == 0, gpu.stderr[-3000:]
    assert "4 of 4 jobs ok" in gpu.stdout
    cpu = run_train([*args, "trainer.accelerator=cpu"], tmp_path / "cpu", timeout=900)
    assert cpu.returncode == 0, cpu.stderr[-3000:]
    keys = {}
    for where in ("gpu", "cpu"):
        runs = sorted((tmp_path / where).glob("logs/multiruns/*/*/summary.json"))
        summaries = [json.loads(p.read_text()) for p in runs]
        assert {s["status"] for s in summaries} == {"ok"}
        keys[where] = {k for s in summaries for k in s["metrics"]}
        expected = "cuda" if where == "gpu" else "cpu"  # several GPUs: jobs spread over them
        assert {s["device"].split(":")[0] for s in summaries} == {expected}
    assert keys["gpu"] == keys["cpu"]


@GPU
def test_gpu_checkpoint_is_scored_on_the_gpu_and_on_the_cpu(tmp_path):
    trained = run_train([*TINY, "trainer.accelerator=gpu", "hydra.run.dir=run"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    for accelerator in ("gpu", "cpu"):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "src" / "evaluate.py"), f"ckpt_path={ckpt}",
             f"trainer.accelerator={accelerator}", *TINY],
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
            env={**os.environ, "TINYCVAE_ROOT": str(tmp_path)},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert 0.0 <= json.loads(proc.stdout)["metrics"]["gen/acc"] <= 1.0


@GPU
def test_gpu_trained_run_exports_and_its_front_reads(tmp_path):
    trained = run_train([*TINY, "trainer.accelerator=gpu", "hydra.run.dir=run"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    export = subprocess.run(
        [sys.executable, str(ROOT / "src" / "export.py"), f"run={tmp_path / 'run'}",
         "targets=[host]", "~mcu", f"out_dir={tmp_path / 'deploy'}", "qat=false",
         "wandb.mode=disabled", "device=cuda"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-3000:]
    assert (tmp_path / "deploy" / "model" / "report.json").is_file()
    pareto = subprocess.run(
        [sys.executable, str(ROOT / "src" / "pareto.py"), str(tmp_path / "run"),
         "--wandb-mode", "disabled"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pareto.returncode == 0, pareto.stderr[-3000:]
