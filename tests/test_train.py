"""Training jobs in-process on tiny settings: summary, checkpoints, resume, failures."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch

import tinycvae.losses
from tinycvae.commands.train import run
from tinycvae.errors import ConfigError
from tinycvae.job import build
from tinycvae.summary import read_summary
from tinycvae.trainer import make_callbacks, make_trainer


def test_a_job_trains_checkpoints_and_summarises(tiny_cfg, tmp_path):
    cfg = tiny_cfg(logger="wandb")
    summary = run(cfg)
    assert summary["status"] == "ok"
    on_disk = read_summary(tmp_path / "run")
    assert on_disk["status"] == "ok"
    for key in ("train/loss", "val/loss", "val/recon", "val/kl", "test/loss", "test/recon"):
        assert key in on_disk["metrics"], key
        assert on_disk["metrics"][key] == on_disk["metrics"][key]  # finite, not NaN
    assert on_disk["params"]["params/decoder"] > 0
    assert on_disk["config"]["model"]["latent"] == cfg.model.latent
    assert on_disk["wall_time_s"] > 0
    assert set(on_disk["checkpoints"]) == {"best", "last"}
    ckpt = torch.load(on_disk["checkpoints"]["last"], weights_only=True)
    assert ckpt["tinycvae"]["config"]["model"]["arch"] == "conv"
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and on_disk["wandb"]["mode"] == "offline"
    assert on_disk["wandb"]["id"] in offline[0].name


class ConvLayout(pl.Callback):
    """Records, at each training step, whether every conv weight is channels-last."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        convs = [p for p in pl_module.model.parameters() if p.dim() == 4]
        self.seen.append(bool(convs) and all(
            p.is_contiguous(memory_format=torch.channels_last) for p in convs
        ))


def test_cpu_training_runs_channels_last_and_hands_back_the_usual_layout(tiny_cfg, tmp_path):
    job = build(tiny_cfg("trainer.accelerator=cpu"))
    layout = ConvLayout()
    trainer = make_trainer(job, False, make_callbacks(job.cfg, False) + [layout])
    trainer.fit(job.module, datamodule=job.datamodule)
    assert layout.seen and all(layout.seen)  # the faster layout while training
    convs = [p for p in job.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous() for p in convs)  # the usual one after fit
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    weights = ckpt["state_dict"]
    assert any(v.dim() == 4 for v in weights.values())
    assert all(v.is_contiguous() for v in weights.values())  # ... and in the checkpoint


def test_same_seed_same_result_on_cpu(tiny_cfg, tmp_path):
    a = run(tiny_cfg("trainer.accelerator=cpu", f"paths.output_dir={tmp_path}/a"))["metrics"]
    torch.randn(1000)  # whatever ran before in the process must not matter
    b = run(tiny_cfg("trainer.accelerator=cpu", f"paths.output_dir={tmp_path}/b"))["metrics"]
    assert a["val/loss"] == b["val/loss"] and a["train/loss"] == b["train/loss"]
    c = run(tiny_cfg("seed=7", f"paths.output_dir={tmp_path}/c"))["metrics"]
    assert c["val/loss"] != a["val/loss"]


def test_a_fresh_start_never_overwrites_a_folders_checkpoints(tiny_cfg, tmp_path):
    assert run(tiny_cfg())["status"] == "ok"
    before = (tmp_path / "run" / "summary.json").read_text()
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run(tiny_cfg())
    assert (tmp_path / "run" / "summary.json").read_text() == before


def poison_loss_after(monkeypatch, calls_before_nan: int) -> None:
    calls = {"n": 0}
    real = tinycvae.losses.reconstruction

    def poisoned(logits, x, kind="bce"):
        calls["n"] += 1
        value = real(logits, x, kind)
        return value * float("nan") if calls["n"] > calls_before_nan else value

    monkeypatch.setattr(tinycvae.losses, "reconstruction", poisoned)


def test_resume_continues_from_the_last_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    with monkeypatch.context() as m:  # the job dies in its second epoch
        poison_loss_after(m, 6)
        first = run(tiny_cfg("trainer.max_epochs=2", logger="wandb"))
    assert first["status"] == "failed: non-finite loss"
    assert torch.load(first["checkpoints"]["last"], weights_only=True)["epoch"] == 0
    second = run(tiny_cfg("trainer.max_epochs=2", "ckpt_path=last", logger="wandb"))
    assert second["status"] == "ok"
    assert second["resumed_from"].endswith("last.ckpt")
    assert second["wandb"]["id"] == first["wandb"]["id"]  # the same W&B run continues
    ckpt = torch.load(second["checkpoints"]["last"], weights_only=True)
    assert ckpt["epoch"] == 1  # 0-based: the second epoch ran, the first was not repeated


def test_resuming_with_another_schedule_is_refused_before_work(tiny_cfg, tmp_path):
    assert run(tiny_cfg("trainer.max_epochs=1"))["status"] == "ok"
    with pytest.raises(ConfigError, match="trainer.max_epochs=3 differs"):
        build(tiny_cfg("trainer.max_epochs=3", "ckpt_path=last"))


def test_a_run_without_a_schedule_resumes_to_more_epochs(tiny_cfg, tmp_path):
    first = run(tiny_cfg("trainer.max_epochs=1", "scheduler=null"))
    assert first["status"] == "ok"
    longer = run(tiny_cfg("trainer.max_epochs=3", "scheduler=null", "ckpt_path=last"))
    assert longer["status"] == "ok" and longer["resumed_from"].endswith("last.ckpt")
    assert torch.load(longer["checkpoints"]["last"], weights_only=True)["epoch"] == 2
    assert longer["started"] == first["started"]  # one run, one record
    with pytest.raises(
        ConfigError,
        match="scheduler=torch.optim.lr_scheduler.OneCycleLR differs from the checkpoint's null",
    ):
        build(tiny_cfg("trainer.max_epochs=4", "ckpt_path=last"))


def test_a_nonfinite_loss_fails_the_job_and_keeps_the_record(tiny_cfg, tmp_path, monkeypatch):
    poison_loss_after(monkeypatch, 6)  # sanity val 1 + 4 train + val 1: dies in epoch 2
    summary = run(tiny_cfg("trainer.max_epochs=3"))
    assert summary["status"] == "failed: non-finite loss"
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["status"] == "failed: non-finite loss"
    assert "epoch 1" in on_disk["error"]
    assert "last" in on_disk["checkpoints"]  # the finished epoch's checkpoint survives
