"""Export a trained run's decoder to C firmware under ``deploy/model/`` and verify it.

Order of work (``export(cfg)``): every input is checked first (the settings and the
device, the targets and their toolchains, ``out_dir``, the source, the checkpoint, the
architecture, the fit on every MCU target; one export at a time holds ``out_dir``, see
:mod:`~tinycvae.deploy.out_dir`), then the model is quantised, the files are written and
built in a temporary folder beside ``deploy/model``, the builds are verified (golden
vectors on the host and under QEMU, ``size`` of each MCU image, evaluator accuracy of
C-drawn images), and only then does the new folder replace ``deploy/model`` (renames; a
failed one puts the previous export back). A failure at any step leaves ``deploy/`` as it
was. Last, the export is logged to W&B (a failure there is a warning: the firmware is
already written).

Each step lives in a module of its own: :mod:`~tinycvae.deploy.preflight` (the checks),
:mod:`~tinycvae.deploy.source` (what to export), :mod:`~tinycvae.deploy.ptq_or_qat`
(the int8 model), :mod:`~tinycvae.deploy.firmware` (the files),
:mod:`~tinycvae.deploy.projects` (the board projects beside them),
:mod:`~tinycvae.deploy.builds` (build and check), :mod:`~tinycvae.deploy.score` (the
evaluator's verdict), :mod:`~tinycvae.deploy.report` and :mod:`~tinycvae.deploy.wandb_log`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from tinycvae import devices
from tinycvae.checkpoints import load_model
from tinycvae.deploy import toolchain
from tinycvae.deploy.builds import build_and_check
from tinycvae.deploy.firmware import write_firmware
from tinycvae.deploy.out_dir import check_out_dir, export_folder
from tinycvae.deploy.preflight import check_fits, check_settings
from tinycvae.deploy.projects import (
    ch32v003_tier,
    check_projects,
    m0_row_kernels,
    m0_stride1_kernel,
    write_projects,
)
from tinycvae.deploy.ptq_or_qat import quantise_for_export
from tinycvae.deploy.report import make_report, record_in_run, write_report
from tinycvae.deploy.score import judge_evaluator, make_scorer, score_shipped
from tinycvae.deploy.source import load_data, resolve_source
from tinycvae.deploy.wandb_log import log_wandb
from tinycvae.errors import ConfigError, ConfigWarning
from tinycvae.known_keys import warn_unknown_keys
from tinycvae.mcu.footprint import MCUProfile, load_mcu
from tinycvae.mcu.stages import extract

log = logging.getLogger(__name__)


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export, build and verify; returns the report (also written to report.json)."""
    device = check_settings(cfg)
    warn_unknown_keys(cfg, "export")
    targets = toolchain.check_targets(list(cfg.targets))
    mcu = load_mcu(cfg.mcu.name) if cfg.get("mcu") else None
    out_dir = check_out_dir(cfg.out_dir)
    final = out_dir / "model"
    with export_folder(out_dir) as scratch:  # one export at a time in out_dir
        if not targets:
            _warn_unchecked(final)
        report = _export(cfg, device, targets, mcu, scratch)
        _swap_in(scratch / "model", final, scratch / "previous")
        log.info("wrote %s%s", final, "" if targets else " (not built or checked: targets=[])")
        try:
            recorded = record_in_run(report)
        except OSError as err:  # the firmware is written; the run's copy is extra
            log.warning(
                "the export is in %s; recording it in its run folder failed: %s", final, err
            )
        else:
            if recorded:
                log.info("recorded in %s", recorded)
        try:
            run_dir = log_wandb(report, final, cfg.get("wandb") or {})
        except Exception as err:  # noqa: BLE001 - the firmware is written; tracking is extra
            log.warning("the export is in %s; logging it to W&B failed: %s", final, err)
            run_dir = None
    if run_dir:
        log.info("W&B run (job_type export, artifact type firmware): %s", run_dir)
    return report


def _warn_unchecked(final: Path) -> None:
    """``targets=[]``: the files are written, but nothing compiles them or runs their
    golden vectors; said before the work, naming what it replaces."""
    replaces = f", replacing the export in {final}" if final.exists() else ""
    warnings.warn(
        f"targets=[]: the model written to {final} is not compiled, and its golden vectors "
        f"are not run{replaces}; check it with make -C deploy check-host "
        f"MODEL_DIR={final}/int8, or name targets (e.g. targets=[host])",
        ConfigWarning,
        stacklevel=2,
    )


def _swap_in(staged: Path, final: Path, old: Path) -> None:
    """Replace ``final`` by ``staged``; on failure ``final`` is what it was."""
    try:
        if final.exists():
            os.replace(final, old)
        os.replace(staged, final)
    except OSError as err:
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise ConfigError(f"could not move the export into {final}: {err}") from None


def _export(
    cfg: DictConfig,
    device: torch.device,
    targets: list[toolchain.Target],
    mcu: MCUProfile | None,
    scratch: Path,
) -> dict[str, Any]:
    """The export's steps, into ``scratch/model``; returns the report."""
    precision = str(cfg.get("precision", "int8"))  # int8 | int4, checked by check_settings
    source = resolve_source(cfg, scratch)
    model, info = load_model(source.checkpoint, "cpu")
    fm = extract(model.decoder, model.latent, model.num_classes)
    estimates = check_fits(fm, targets, mcu, precision)

    dm = load_data(info)
    devices.place(device, model, dm)
    fm = fm.to(device)
    scorer = make_scorer(cfg, model, dm, info)
    judge_of = lambda: judge_evaluator(info, dm, device)  # noqa: E731 - only when asked
    qm, quality, calibrated = quantise_for_export(
        cfg, model, fm, dm, scorer, precision, judge_of
    )

    model_dir, build = scratch / "model", scratch / "build"
    write_firmware(model_dir, model, fm, qm, cfg.golden_count, cfg.seed + 1)
    # the projects' and the emulators' builds: the CH32V003's rv32ec tier, the 16 KB M0's
    # stride-1 kernel and row kernels
    tier, arm = ch32v003_tier(fm, precision), m0_stride1_kernel(fm, precision)
    rows = m0_row_kernels(fm, precision)
    write_projects(model_dir, check_projects(cfg.get("projects")), precision, tier,
                   arm != "direct", rows != "runtime")  # fmt: skip
    results = {
        t.name: build_and_check(t, model_dir, build, estimates, precision, tier, arm, rows)
        for t in targets
    }
    quality |= score_shipped(scorer, qm, build, "host" in results, cfg.max_acc_drop)

    report = make_report(source, info, fm, qm, calibrated, quality, results, mcu, model_dir)
    write_report(model_dir, report)
    return report
