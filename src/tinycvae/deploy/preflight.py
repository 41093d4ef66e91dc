"""The checks an export makes before any work: its settings, its device, and whether the
model fits every microcontroller it is built for."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, ListConfig

from tinycvae import devices
from tinycvae.checks import require_int, require_number
from tinycvae.deploy.out_dir import check_out_dir
from tinycvae.deploy.projects import check_projects
from tinycvae.deploy.quantize import BITS
from tinycvae.deploy.toolchain import Target
from tinycvae.errors import ConfigError
from tinycvae.mcu.footprint import MCUProfile, estimate_stages, load_mcu, rv_tier
from tinycvae.mcu.stages import FloatModel


def check_settings(cfg: DictConfig) -> torch.device:
    """Refuse a bad setting of ``conf/export.yaml`` in one line; return the device the
    export computes on (``device``: auto, cpu, cuda, cuda:N or mps)."""
    check_precision(cfg.get("precision", "int8"))
    device = devices.resolve(cfg.get("device", "auto"), "device")
    for key, least in (("golden_count", 1), ("eval_samples", 1), ("calib_samples", 1),
                       ("qat_epochs", 1)):  # fmt: skip
        require_int(cfg[key], key, least)
    for key in ("qat_epochs_int4", "qat_batch_size", "qat_batch_size_int4"):
        if cfg.get(key) is not None:
            require_int(cfg[key], key, 1)
    if cfg.get("qat_lr_int4") is not None:
        require_number(cfg.qat_lr_int4, "qat_lr_int4", 0.0, exclusive=True)
    _check_judge(cfg)
    require_int(cfg.seed, "seed", 0)
    if cfg.get("wandb"):
        from tinycvae.tracking import resolve_mode

        try:
            resolve_mode(cfg.wandb.get("mode", "auto"))
        except ConfigError as err:
            raise ConfigError(str(err).replace("logger.wandb.mode", "wandb.mode")) from None
    if not isinstance(cfg.targets, ListConfig):
        raise ConfigError(
            f"targets={cfg.targets} is invalid; allowed: a list such as targets=[host,ch32v003]"
        )
    check_projects(cfg.get("projects"))
    if cfg.qat not in (True, False, "auto"):
        raise ConfigError(f"qat={cfg.qat} is invalid; allowed: auto, true, false")
    require_number(cfg.qat_lr, "qat_lr", 0.0, exclusive=True)
    require_number(cfg.max_acc_drop, "max_acc_drop", 0.0)
    if not cfg.get("out_dir"):
        raise ConfigError("out_dir is empty; allowed: a folder (default deploy)")
    check_out_dir(cfg.out_dir)
    return device


def _check_judge(cfg: DictConfig) -> None:
    """Keeping the epoch the judge rates best: true or false."""
    for key in ("qat_keep_best", "qat_keep_best_int4"):
        if cfg.get(key) is not None and not isinstance(cfg[key], bool):
            raise ConfigError(f"{key}={cfg[key]} is invalid; allowed: true, false")


def check_precision(precision: Any) -> str:
    """The shipped integer precision (``precision``: int8 or int4); one line naming the
    allowed ones otherwise."""
    if precision not in BITS:
        raise ConfigError(f"precision={precision} is unknown; allowed: {', '.join(BITS)}")
    return str(precision)


def check_fit(
    fm: FloatModel, mcu: MCUProfile, target: str, precision: str = "int8"
) -> dict[str, Any]:
    """The ``precision`` estimate of the stages ``fm`` for ``mcu`` (streamed, as the
    firmware runs); ConfigError saying by how much when the model does not fit. Its
    figures are :meth:`~tinycvae.mcu.footprint.Footprint.fits`', as in summary.json's
    ``need`` that ``src/pareto.py --select`` prints; on a core without a multiplier also
    the rv32ec build it is counted with (``rv32ec_tier``: quarter-square, table-free or
    table-free-c, :func:`~tinycvae.mcu.footprint.rv_tier`), and on ARMv6-M, where a
    stage has Winograd weights, its stride-1 kernel (``armv6m_stride1``: winograd, or
    direct where the kernel's weights and code leave the part's flash) and, where a stage
    has a generated row kernel, ``armv6m_rows`` (generated, or runtime where they leave it:
    the same fallback)."""
    fp = estimate_stages(fm, precision, True, mcu)
    fit = fp.fits(mcu)
    tier = rv_tier(precision, mcu, fp.model_flash(mcu), fp.last_acc_row)
    if not (fit["flash_ok"] and fit["ram_ok"]):
        kernels = f" with the {tier} rv32ec kernels" if tier else ""
        raise ConfigError(
            f"the {precision} model does not fit {mcu.name} (target {target}){kernels}: flash "
            f"{fit['flash_bytes']} B of {mcu.flash_bytes} B ({fit['flash_over_bytes']} B over), "
            f"RAM {fit['ram_bytes']} B of {mcu.ram_bytes} B ({fit['ram_over_bytes']} B over); "
            f"pick a smaller run (python src/pareto.py <folder> --select {mcu.name}), "
            f"{'precision=int4 (half the weight bytes), ' if precision == 'int8' else ''}"
            "or drop the target"
        )
    est = {"flash_bytes": fit["flash_bytes"], "ram_bytes": fit["ram_bytes"]}
    kernel = fp.armv6m_stride1(mcu)  # where a stage has Winograd weights
    if kernel:
        est["armv6m_stride1"] = kernel
    rows = fp.armv6m_row_kernels(mcu)  # where a stage has a generated row kernel
    if rows:
        est["armv6m_rows"] = rows
    return est | ({"rv32ec_tier": tier} if tier else {})


def check_fits(
    fm: FloatModel, targets: list[Target], mcu: MCUProfile | None, precision: str = "int8"
) -> dict[str, dict[str, Any]]:
    """:func:`check_fit` for every target built for a microcontroller, and for ``mcu=``;
    the estimates by target name (``mcu:<name>`` for ``mcu=``)."""
    estimates: dict[str, dict[str, Any]] = {}
    for target in targets:
        if target.mcu:
            estimates[target.name] = check_fit(fm, load_mcu(target.mcu), target.name, precision)
    if mcu is not None:
        estimates.setdefault(f"mcu:{mcu.name}", check_fit(fm, mcu, f"mcu={mcu.name}", precision))
    return estimates
