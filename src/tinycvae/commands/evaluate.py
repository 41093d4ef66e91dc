"""``src/evaluate.py``: train the evaluator explicitly, or score a checkpoint, on the
device ``trainer.accelerator`` names (``auto``: a GPU when there is one)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import DictConfig, open_dict

from tinycvae import devices
from tinycvae.checkpoints import load_model
from tinycvae.errors import ConfigError
from tinycvae.job import build
from tinycvae.metrics import evaluate_quality
from tinycvae.quality_stage import prepare_evaluator
from tinycvae.sampling import choose_sampler, fit_sampler


def evaluate(cfg: DictConfig) -> dict:
    """The evaluator's record, plus the checkpoint's quality metrics when one is named."""
    ckpt = cfg.get("ckpt_path")
    with open_dict(cfg):
        cfg.ckpt_path = None  # here it names a model to score, not a run to resume
        cfg.metrics.enabled = True
    job = build(cfg, "evaluate")  # +sampler= and +sample_std= are its settings
    model = _checkpoint_model(ckpt, cfg) if ckpt else None  # before any work: it may be bad
    record = prepare_evaluator(job)
    out: dict = {
        "data": job.datamodule.spec.name,
        "evaluator": {
            "path": str(record.path),
            "test_acc": record.test_acc,
            "epochs_used": record.epochs_used,
        },
    }
    if model is not None:
        devices.place(job.device, model)
        if choose_sampler(model, cfg.get("sampler"), job.device, cfg.get("sample_std")):
            fit_sampler(model, job.datamodule.splits.train)
        metrics, _, _ = evaluate_quality(
            model, job.datamodule.splits.test, record.evaluator, job.quality
        )
        out["checkpoint"] = str(ckpt)
        out["sampler"] = model.sampler.kind
        out["sample_std"] = model.sampler.sample_std
        out["metrics"] = {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}
    print(json.dumps(out, indent=2))
    return out


def _checkpoint_model(ckpt: str, cfg: DictConfig):
    """The model of ``ckpt_path``, trained on this command's data set (else one line)."""
    if not Path(ckpt).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt} does not exist; allowed: a checkpoint a training run wrote "
            "(<run folder>/checkpoints/best.ckpt)"
        )
    model, info = load_model(ckpt, "cpu")  # saved on any device, scored on the job's
    trained_on = info["config"]["data"]
    if trained_on.get("name") != cfg.data.name:
        raise ConfigError(
            f"ckpt_path={ckpt} was trained on data={trained_on.get('name')}; "
            f"allowed: data={trained_on.get('name')}"
        )
    return model
