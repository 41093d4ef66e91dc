"""The front written out: ``pareto.csv``, ``pareto.md``, ``pareto.png`` (bypass and
real-VAE runs drawn apart) and a W&B run with the table and a scatter."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tinycvae.front.rows import RunRow

COLUMNS = [
    "name", "status", "latent_mode", "latent", "beta", "dims", "conditioning", "arch",
    "params_decoder", "flash_bytes", "ram_bytes", "acc", "fid", "fid_network", "mse", "ssim",
    "front_acc", "front_fid", "run_dir", "checkpoint",
]  # fmt: skip


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_table(rows: list[RunRow], out_dir: Path, precision: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "pareto.csv", "md": out_dir / "pareto.md"}
    ordered = sorted(rows, key=lambda r: (r.status != "ok", r.flash_bytes, -_nz(r.acc)))
    with paths["csv"].open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in ordered:
            d = asdict(r)
            w.writerow({k: _fmt(d[k]) for k in COLUMNS})
    md_cols = ["front_acc", "front_fid", "latent_mode", "latent", "beta", "dims",
               "conditioning", "params_decoder", "flash_bytes", "ram_bytes", "acc", "fid",
               "mse", "ssim", "name"]  # fmt: skip
    lines = [
        f"# Pareto front ({precision}: flash and RAM of the deployed decoder)",
        "",
        "| " + " | ".join(md_cols) + " |",
        "|" + "---|" * len(md_cols),
    ]
    for r in (r for r in ordered if r.status == "ok"):
        d = asdict(r)
        cells = [
            ("**yes**" if d[k] else "") if k.startswith("front") else _fmt(d[k]) for k in md_cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in ordered if r.status != "ok"]
    if failed:
        lines += ["", "## Failed runs", ""] + [
            f"- {r.name}: {r.status} ({r.run_dir})" for r in failed
        ]
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths


def _nz(v: float) -> float:
    return -1.0 if math.isnan(v) else v


def plot(rows: list[RunRow], path: Path, precision: str) -> Path:
    """Flash vs accuracy and flash vs FID; bypass and real-VAE runs drawn apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.flash_bytes)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {
        "bypass": ("o", "tab:orange", "latent-angle bypass"),
        "reparam": ("s", "tab:blue", "real VAE"),
    }
    for ax, attr, front, label in (
        (axes[0], "acc", "front_acc", "evaluator accuracy"),
        (axes[1], "fid", "front_fid", "FID (evaluator features)"),
    ):
        for mode, (marker, colour, name) in styles.items():
            pts = [r for r in ok if r.latent_mode == mode]
            ax.scatter([r.flash_bytes for r in pts], [getattr(r, attr) for r in pts],
                       marker=marker, c=colour, label=name, alpha=0.8)  # fmt: skip
        on = sorted((r for r in ok if getattr(r, front)), key=lambda r: r.flash_bytes)
        ax.plot([r.flash_bytes for r in on], [getattr(r, attr) for r in on], "k--", lw=1,
                label="Pareto front")  # fmt: skip
        if any(math.isfinite(getattr(r, attr)) for r in ok):  # else: nothing to scale
            ax.set_xscale("log")
        ax.set_xlabel(f"decoder flash, {precision} (bytes)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_wandb(rows: list[RunRow], plot_path: Path, project: str, mode: str) -> str | None:
    """A W&B run (job_type ``pareto``) with the table, a scatter and the plot."""
    import wandb

    from tinycvae.tracking import resolve_mode

    mode = resolve_mode(mode)
    if mode == "disabled":
        return None
    run = wandb.init(project=project, job_type="pareto", mode=mode, dir=str(plot_path.parent))
    try:
        table = wandb.Table(
            columns=COLUMNS, data=[[_fmt(asdict(r)[k]) for k in COLUMNS] for r in rows]
        )
        num = wandb.Table(
            columns=["flash_bytes", "acc", "latent_mode"],
            data=[[r.flash_bytes, r.acc, r.latent_mode] for r in rows if r.status == "ok"],
        )
        run.log(
            {
                "pareto/table": table,
                "pareto/flash_vs_acc": wandb.plot.scatter(num, "flash_bytes", "acc"),
                "pareto/plot": wandb.Image(str(plot_path)),
            }
        )
        return run.dir
    finally:
        wandb.finish()
