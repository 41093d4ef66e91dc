"""The export's report: what was exported and from where, its stages and quantisation,
its quality and what each target measured; written as ``report.json`` beside the firmware
and returned (and printed) by the export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinycvae.deploy.footprint import MCUProfile
from tinycvae.deploy.quantize import QuantModel
from tinycvae.deploy.source import Source
from tinycvae.deploy.stages import FloatModel
from tinycvae.summary import now_iso

MODEL_KEYS = ("arch", "latent", "latent_mode", "sampler", "dim1", "dim2", "dim3", "dim4", "hidden")


def make_report(
    source: Source,
    info: dict[str, Any],
    fm: FloatModel,
    qm: QuantModel,
    calibration_samples: int,
    quality: dict[str, Any],
    targets: dict[str, Any],
    mcu: MCUProfile | None,
    model_dir: Path,
) -> dict[str, Any]:
    """The report (JSON-ready); ``info`` is the run info stored with the checkpoint and
    ``model_dir`` the folder of written files (listed, plus ``report.json``)."""
    model_cfg = info["config"]["model"]
    return {
        "created": now_iso(),
        "source": source.how,
        "checkpoint": str(source.checkpoint),
        "model": {k: model_cfg.get(k) for k in MODEL_KEYS if k in model_cfg}
        | {
            "conditioning": model_cfg.get("conditioning", {}).get("kind"),
            "data": info["config"]["data"].get("name"),
            "stages": [f"{s.kind} {s.in_shape}->{s.out_shape}" for s in fm.stages],
        },
        "quantisation": {
            "z_scale": qm.z_scale,
            "z_one": qm.z_one,
            "logit_scale": qm.logit_scale,
            "table_shift": qm.table_shift,
            "activation_scales": qm.act_scales,
            "calibration_samples": int(calibration_samples),
        },
        "quality": quality,
        "targets": targets,
        "mcu": mcu.name if mcu else None,
        "files": sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
        + ["report.json"],
    }


def write_report(model_dir: Path, report: dict[str, Any]) -> None:
    (model_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
