"""A finished run as a Pareto row, read from its ``summary.json`` record, and what its
decoder needs on an MCU (as the export's fit check counts it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinycvae.mcu.footprint import load_mcu


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
    need: dict[str, dict[str, int]] = field(default_factory=dict)  # per MCU, as export counts
    rv32ec_tier: dict[str, str] = field(default_factory=dict)  # per MCU without a multiplier
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
        need=dict(fp.get("need", {})),
        rv32ec_tier=dict(fp.get("rv32ec_tier", {})),
    )


def kernels_note(row: RunRow, mcu: str) -> str:
    """``, table-free rv32ec kernels``: the build ``row``'s decoder is counted with on
    ``mcu`` (quarter-square, table-free or table-free-c, the CH32V003's tiers); empty for a
    core with a multiplier, or a summary written before the tier was recorded."""
    tier = row.rv32ec_tier.get(mcu)
    return f", {tier} rv32ec kernels" if tier else ""


def need(row: RunRow, mcu: str) -> dict[str, float]:
    """The flash and RAM ``row``'s decoder takes on ``mcu``, as the export's fit check
    counts them (that core's code, the RAM reserve); from summaries written before
    ``need`` was recorded: budget + excess when over, else the RAM plus the reserve."""
    if mcu in row.need:
        return {k: float(v) for k, v in row.need[mcu].items()}
    profile, over = load_mcu(mcu), row.over.get(mcu, {})
    flash_over, ram_over = over.get("flash_bytes", 0), over.get("ram_bytes", 0)
    return {
        "flash_bytes": profile.flash_bytes + flash_over if flash_over else row.flash_bytes,
        "ram_bytes": profile.ram_bytes + ram_over
        if ram_over
        else row.ram_bytes + profile.reserve_ram_bytes,
    }
