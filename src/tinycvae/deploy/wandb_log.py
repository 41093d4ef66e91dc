"""The export as a W&B run (job_type ``export``): the report's figures as summary keys, a
table of the targets, and the firmware folder as an artifact of type ``firmware``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def flat_figures(report: dict[str, Any]) -> dict[str, float]:
    """W&B summary keys: ``export/acc_c_int8``, ``export/ch32v003/flash_bytes``, ..."""
    flat = {
        f"export/{k}": float(v)
        for k, v in report["quality"].items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    for name, t in report["targets"].items():
        if "measured" in t:
            for what in ("flash_bytes", "ram_bytes"):
                flat[f"export/{name}/{what}"] = float(t["measured"][what])
                flat[f"export/{name}/{what}_estimated"] = float(t["estimated"][what])
        for key in ("instructions_per_image", "stack_high_water_bytes"):
            if t.get(key) is not None:
                flat[f"export/{name}/{key}"] = float(t[key])
    return flat


def log_wandb(report: dict[str, Any], model_dir: Path, settings: Any) -> str | None:
    """Log the export; offline unless logged in (``settings``: the ``wandb`` block of the
    export config, its ``mode`` auto / offline / online / disabled). The run lives in
    ``model_dir/wandb``. Returns its folder (None when disabled)."""
    import wandb

    from tinycvae.tracking import resolve_mode

    mode = resolve_mode(settings.get("mode", "auto"))
    if mode == "disabled":
        return None
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    run = wandb.init(
        project=settings.get("project", "tinycvae"),
        entity=settings.get("entity"),
        job_type="export",
        mode=mode,
        dir=str(model_dir),
        config={"model": report["model"], "source": report["source"], "mcu": report["mcu"]},
    )
    ok = False
    try:
        run.summary.update(flat_figures(report))
        rows = [
            [name, t.get("mcu"), t["measured"]["flash_bytes"], t["estimated"]["flash_bytes"],
             t["budget"]["flash_bytes"], t["measured"]["ram_bytes"], t["estimated"]["ram_bytes"],
             t["budget"]["ram_bytes"]]
            for name, t in report["targets"].items() if "measured" in t
        ]  # fmt: skip
        run.log({"export/targets": wandb.Table(
            columns=["target", "mcu", "flash", "flash_est", "flash_budget", "ram", "ram_est",
                     "ram_budget"], data=rows)})  # fmt: skip
        stem = Path(report["checkpoint"]).parent.parent.name or "model"
        artifact = wandb.Artifact(
            f"firmware-{stem}", type="firmware", metadata={"quality": report["quality"]}
        )
        for path in files:
            artifact.add_file(str(path), name=str(path.relative_to(model_dir)))
        run.log_artifact(artifact)
        ok = True
        return run.dir
    finally:
        wandb.finish(exit_code=0 if ok else 1)
