"""The size/quality Pareto front over finished runs, and picking the run for a chip
(:func:`run` is what ``src/pareto.py`` does).

Rows come from the runs' own ``summary.json`` files (one or more multirun or run
folders, searched recursively), from an Optuna study's trials
(:mod:`tinycvae.search.front`) or, online, from a W&B project. A run is on the front
when no other run is at least as small (decoder flash at the chosen precision) and at
least as good (evaluator accuracy; separately, FID) and strictly better in one of the
two. Runs with identical coordinates are all on the front. Failed runs are listed apart.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinycvae.checks import require_writable_dir
from tinycvae.deploy.footprint import check_precision, load_mcu
from tinycvae.errors import ConfigError, TinyCVAEError


class SelectError(TinyCVAEError):
    """No run fits the chip."""


@dataclass
class RunRow:
    run_dir: str
    name: str
    status: str
    data: str = ""
    arch: str = ""
    conditioning: str = ""
    latent_mode: str = ""
    latent: int = 0
    beta: float = math.nan
    dims: str = ""
    params_decoder: int = 0
    flash_bytes: float = math.nan
    ram_bytes: float = math.nan
    acc: float = math.nan
    fid: float = math.nan
    fid_network: str = ""  # the evaluator file whose features the FID is measured in
    mse: float = math.nan
    ssim: float = math.nan
    checkpoint: str = ""
    fits: dict[str, bool] = field(default_factory=dict)
    over: dict[str, dict[str, int]] = field(default_factory=dict)
    front_acc: bool = False
    front_fid: bool = False


def row_from_summary(s: dict[str, Any], precision: str) -> RunRow:
    if not isinstance(s, dict):
        raise ValueError(f"it holds a JSON {type(s).__name__}, not an object")
    cfg = s.get("config", {})
    model = cfg.get("model", {})
    m = s.get("metrics", {})
    fp = (s.get("footprint") or {}).get(precision, {})
    dims = (
        "_".join(str(model.get(f"dim{i}")) for i in range(1, 5))
        if model.get("arch") == "conv"
        else f"h{model.get('hidden')}"
    )

    def num(key: str) -> float:
        v = m.get(key, math.nan)
        return float(v) if isinstance(v, (int, float)) else math.nan

    return RunRow(
        run_dir=s.get("run_dir", ""),
        name=s.get("name", ""),
        status=s.get("status", "unknown"),
        data=cfg.get("data", {}).get("name", ""),
        arch=model.get("arch", ""),
        conditioning=model.get("conditioning", {}).get("kind", ""),
        latent_mode=model.get("latent_mode", ""),
        latent=int(model.get("latent", 0) or 0),
        beta=float(cfg.get("beta", math.nan)),
        dims=dims,
        params_decoder=int(s.get("params", {}).get("params/decoder", 0)),
        flash_bytes=float(fp.get("flash_bytes", math.nan)),
        ram_bytes=float(fp.get("ram_bytes_streamed", fp.get("ram_bytes", math.nan))),
        acc=num("gen/acc"),
        fid=num("gen/fid_evaluator"),
        fid_network=Path(str((s.get("evaluator") or {}).get("path") or "")).stem,
        mse=num("test/mse"),
        ssim=num("test/ssim"),
        checkpoint=s.get("checkpoints", {}).get("best", ""),
        fits=dict(fp.get("fits", {})),
        over=dict(fp.get("over", {})),
    )


def collect_runs(folders: list[str | Path], precision: str = "int8") -> list[RunRow]:
    """Every run under ``folders`` (searched recursively for summary.json)."""
    check_precision(precision)
    rows = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder; allowed: run or multirun folders")
        found = sorted(folder.rglob("summary.json"))
        if not found:
            raise ConfigError(f"{folder} holds no runs (no summary.json below it)")
        for path in found:
            try:
                rows.append(row_from_summary(json.loads(path.read_text()), precision))
            except (OSError, ValueError, TypeError, AttributeError) as err:
                reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
                warnings.warn(f"{path} is unreadable ({reason}); skipped", stacklevel=2)
    if not rows:
        raise ConfigError(f"no readable summary.json under {', '.join(map(str, folders))}")
    return rows


def non_dominated(points: list[tuple[float, float]]) -> list[bool]:
    """``points`` are (cost to minimise, quality to maximise); True where no other point is
    at least as good in both and better in one. NaN points are never on the front."""
    out = []
    for i, (c, q) in enumerate(points):
        if math.isnan(c) or math.isnan(q):
            out.append(False)
            continue
        dominated = any(
            (c2 <= c and q2 >= q and (c2 < c or q2 > q))
            for j, (c2, q2) in enumerate(points)
            if j != i and not (math.isnan(c2) or math.isnan(q2))
        )
        out.append(not dominated)
    return out


def mark_fronts(rows: list[RunRow]) -> None:
    """Mark the accuracy front over every finished run, and one FID front per feature
    network (FIDs in different evaluators' features are never compared)."""
    ok = [r for r in rows if r.status == "ok"]
    for r, on in zip(ok, non_dominated([(r.flash_bytes, r.acc) for r in ok])):
        r.front_acc = on
    networks = sorted({r.fid_network for r in ok if not math.isnan(r.fid)})
    if len(networks) > 1:
        warnings.warn(
            f"FIDs measured by {len(networks)} different evaluators ({', '.join(networks)}): "
            "each has its own FID front; they are never compared",
            stacklevel=2,
        )
    for network in networks:
        group = [r for r in ok if r.fid_network == network]
        for r, on in zip(group, non_dominated([(r.flash_bytes, -r.fid) for r in group])):
            r.front_fid = on


def select(rows: list[RunRow], mcu: str) -> RunRow:
    """The best finished run whose decoder fits ``mcu``: highest accuracy, then lowest
    FID, then smallest flash. SelectError (naming the smallest run and how far it is
    over budget) when none fits."""
    ok = [r for r in rows if r.status == "ok"]
    if ok and all(mcu not in r.fits for r in ok):
        raise ConfigError(f"no run has a footprint estimate for mcu={mcu}")
    fitting = [r for r in ok if r.fits.get(mcu)]
    if not fitting:
        if not ok:
            raise SelectError("no finished run to select from")
        smallest = min(ok, key=lambda r: (r.flash_bytes, r.ram_bytes))
        over = smallest.over.get(mcu, {})
        raise SelectError(
            f"no run fits {mcu}: the smallest, {smallest.name} ({smallest.run_dir}), needs "
            f"{smallest.flash_bytes:.0f} B flash ({over.get('flash_bytes', 0)} B over) and "
            f"{smallest.ram_bytes:.0f} B RAM ({over.get('ram_bytes', 0)} B over)"
        )

    def key(r: RunRow):
        acc = -1.0 if math.isnan(r.acc) else r.acc
        fid = math.inf if math.isnan(r.fid) else r.fid
        return (-acc, fid, r.flash_bytes)

    return min(fitting, key=key)


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


def rows_from_wandb(project: str, precision: str) -> list[RunRow]:
    """Rows from a W&B project (online): each run's config and summary."""
    import wandb

    rows = []
    for run in wandb.Api().runs(project):
        s = dict(run.summary)
        summary = {
            "run_dir": run.url,
            "name": run.name,
            "status": s.get("status", "ok" if run.state == "finished" else run.state),
            "config": dict(run.config),
            "metrics": {k: v for k, v in s.items() if isinstance(v, (int, float))},
            "params": {"params/decoder": s.get("params/decoder", 0)},
            "footprint": {precision: _footprint_from_flat(s, precision)},
        }
        rows.append(row_from_summary(summary, precision))
    return rows


def _footprint_from_flat(s: dict, precision: str) -> dict:
    p = f"mcu/{precision}/"
    fits = {k[len(p) + 5 :]: bool(v) for k, v in s.items() if k.startswith(p + "fits/")}
    return {
        "flash_bytes": s.get(p + "flash_bytes", math.nan),
        "ram_bytes_streamed": s.get(p + "ram_bytes_streamed", s.get(p + "ram_bytes", math.nan)),
        "fits": fits,
    }


def run(
    folders: Sequence[str | Path] = (),
    *,
    precision: str = "int8",
    mcu: str | None = None,
    out: Path | None = None,
    wandb_project: str | None = None,
    optuna_storage: str | None = None,
    study: str | None = None,
    wandb_mode: str = "auto",
    project: str = "tinycvae",
    min_acc: float | None = None,
) -> RunRow | None:
    """Read the runs (an Optuna study, a W&B project, or ``folders``, in that order of
    precedence), mark the fronts, write pareto.{csv,md,png} into ``out`` (default: the
    first folder, else beside the study's file), print the table, log it to W&B project
    ``project``; with ``mcu``, print and return the best run that fits it, or with
    ``min_acc`` too the smallest that fits and meets it (:mod:`tinycvae.smallest`). Every
    input is checked before any work."""
    from tinycvae.smallest import check_min_acc, smallest_meeting

    check_min_acc(min_acc)
    if min_acc is not None and not mcu:
        raise ConfigError(f"--min-acc={min_acc} needs --select MCU (the chip it must fit)")
    if mcu:
        load_mcu(mcu)  # an unknown MCU is bad input, said before any work
    check_precision(precision)
    if out or folders:  # where pareto.* go: checked before any work
        require_writable_dir(out or Path(folders[0]), "--out")
    study_out = None
    if optuna_storage:
        from tinycvae.search.front import default_out, load_study, rows_from_study

        found, storage = load_study(optuna_storage, study)
        rows = rows_from_study(found, precision)
        study_out = default_out(storage)
    elif wandb_project:
        rows = rows_from_wandb(wandb_project, precision)
    elif folders:
        rows = collect_runs(folders, precision)
    else:
        raise ConfigError(
            "no runs given; allowed: one or more folders, --wandb-project or --optuna-storage"
        )
    mark_fronts(rows)
    out = Path(out or (folders[0] if folders else study_out or "."))
    paths = write_table(rows, out, precision)
    paths["png"] = plot(rows, out / "pareto.png", precision)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    log_wandb(rows, paths["png"], project, wandb_mode)
    if not mcu:
        return None
    if min_acc is not None:
        return smallest_meeting(rows, mcu, min_acc, precision).row
    best = select(rows, mcu)
    print(
        f"selected for {mcu} ({precision}): {best.name}: acc {best.acc:.3f}, "
        f"flash {best.flash_bytes:.0f} B, RAM {best.ram_bytes:.0f} B\n"
        f"run: {best.run_dir}\ncheckpoint: {best.checkpoint}"
    )
    return best
