"""``src/evaluate.py``: train the evaluator explicitly, or score a checkpoint, on the
device ``trainer.accelerator`` names (``auto``: a GPU when there is one)."""

from __future__ import annotations

import json
import math

from omegaconf import DictConfig, open_dict

from tinycvae import devices
from tinycvae.checkpoints import load_model
from tinycvae.errors import ConfigError
from tinycvae.metrics import evaluate_quality, fit_sampler
from tinycvae.models.samplers import choose_sampler
from tinycvae.train import build, prepare_evaluator


def evaluate(cfg: DictConfig) -> dict:
    """The evaluator's record, plus the checkpoint's quality metrics when one is named."""
    ckpt = cfg.get("ckpt_path")
    with open_dict(cfg):
        cfg.ckpt_path = None  # here it names a model to score, not a run to resume
        cfg.metrics.enabled = True
    job = build(cfg, "evaluate")  # +sampler= and +sample_std= are its settings
    record = prepare_evaluator(job)
    out: dict = {
        "data": job.datamodule.spec.name,
        "evaluator": {
            "path": str(record.path),
            "test_acc": record.test_acc,
            "epochs_used": record.epochs_used,
        },
    }
    if ckpt:
        model, info = load_model(ckpt, "cpu")  # saved on any device, scored on the job's
        devices.place(job.device, model)
        trained_on = info["config"]["data"]
        if trained_on.get("name") != cfg.data.name:
            raise ConfigError(
                f"ckpt_path={ckpt} was trained on data={trained_on.get('name')}; "
                f"allowed: data={trained_on.get('name')}"
            )
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
