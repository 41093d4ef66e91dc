"""Export a trained run's decoder to C firmware under ``deploy/model/`` and verify it.

Order of work (``export(cfg)``): every input is checked first (targets and their
toolchains, the source, the checkpoint, the architecture, the fit on every MCU target),
then the model is quantised, the files are written and built in a temporary folder
beside ``deploy/model``, the builds are verified (golden vectors on the host and under
QEMU, ``size`` of each MCU image, evaluator accuracy of C-drawn images), and only then
does the new folder replace ``deploy/model`` (renames; a failed one puts the previous
export back). A failure at any step leaves ``deploy/`` as it was. Last, the export is
logged to W&B (a failure there is a warning: the firmware is already written).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from tinycvae.checkpoints import load_model
from tinycvae.checks import require_int, require_number
from tinycvae.deploy import codegen, toolchain
from tinycvae.deploy.qat import finetune
from tinycvae.deploy.quantize import QuantModel, extract, quantize, run_fp32, run_int8
from tinycvae.errors import ConfigError, TinyCVAEError
from tinycvae.evaluator import EvaluatorSettings, accuracy, check_floor, load_or_train
from tinycvae.footprint import MCUProfile, estimate, load_mcu
from tinycvae.metrics import balanced_labels, latents_of
from tinycvae.models import CVAE
from tinycvae.pareto import collect_runs, select
from tinycvae.summary import now_iso

log = logging.getLogger(__name__)

SOURCES = ("run", "checkpoint", "select_from", "artifact")


@dataclass
class Source:
    checkpoint: Path
    how: str  # which of SOURCES named it, and with what


def _download_artifact(name: str, into: Path) -> Path:
    import wandb

    from tinycvae.tracking import resolve_mode

    if resolve_mode("auto") != "online":
        raise ConfigError(
            f"artifact={name} needs W&B online (wandb login or WANDB_API_KEY); offline, "
            "pass checkpoint=<path to .ckpt> or run=<run folder>"
        )
    try:
        folder = Path(wandb.Api().artifact(name).download(root=str(into)))
    except Exception as err:  # noqa: BLE001 - any W&B failure is one line for the user
        raise ConfigError(f"artifact={name} could not be downloaded: {err}") from None
    found = sorted(folder.rglob("*.ckpt"))
    if not found:
        raise ConfigError(f"artifact={name} holds no .ckpt file")
    return found[0]


def resolve_source(cfg: DictConfig, scratch: Path) -> Source:
    """The checkpoint to export: exactly one of run / checkpoint / select_from / artifact."""
    given = [k for k in SOURCES if cfg.get(k) not in (None, "", [])]
    if len(given) != 1:
        raise ConfigError(
            f"name exactly one model to export (given: {', '.join(given) or 'none'}); allowed: "
            "run=<run folder>, checkpoint=<file.ckpt>, select_from=[<folders>] (with mcu=), "
            "artifact=<entity/project/name:alias>"
        )
    kind = given[0]
    value = cfg[kind]
    if kind == "checkpoint":
        return Source(Path(value), f"checkpoint={value}")
    if kind == "run":
        path = Path(value) / "checkpoints" / "best.ckpt"
        if not path.is_file():
            raise ConfigError(f"run={value} has no checkpoints/best.ckpt; allowed: a run folder")
        return Source(path, f"run={value}")
    if kind == "artifact":
        return Source(_download_artifact(str(value), scratch), f"artifact={value}")
    if not cfg.get("mcu"):
        raise ConfigError("select_from=... picks the best run that fits an MCU: set mcu=<name>")
    folders = [value] if isinstance(value, str) else list(value)
    row = select(collect_runs(folders), cfg.mcu.name)
    if not row.checkpoint or not Path(row.checkpoint).is_file():
        raise ConfigError(f"the selected run {row.run_dir} has no best checkpoint")
    log.info("selected %s (acc %.3f) for %s", row.run_dir, row.acc, cfg.mcu.name)
    how = f"select_from={folders} mcu={cfg.mcu.name} -> {row.run_dir}"
    return Source(Path(row.checkpoint), how)


def check_fit(model: CVAE, mcu: MCUProfile, target: str) -> dict[str, Any]:
    """The estimate for ``mcu`` (streamed, as the firmware runs); ConfigError saying by how
    much when the model does not fit."""
    fp = estimate(model.decoder, model.latent, model.num_classes, "int8", True, mcu)
    fit = fp.fits(mcu)
    if not (fit["flash_ok"] and fit["ram_ok"]):
        raise ConfigError(
            f"the model does not fit {mcu.name} (target {target}): flash {fp.flash_bytes} B of "
            f"{mcu.flash_bytes} B ({fit['flash_over_bytes']} B over), RAM {fp.ram_bytes} B of "
            f"{mcu.ram_bytes} B ({fit['ram_over_bytes']} B over); pick a smaller run "
            f"(python src/pareto.py <folder> --select {mcu.name}) or drop the target"
        )
    return {"flash_bytes": fp.flash_bytes, "ram_bytes": fp.ram_bytes}


def _settings(cfg: DictConfig) -> None:
    for key, least in (("golden_count", 1), ("eval_samples", 1), ("calib_samples", 1),
                       ("qat_epochs", 1)):  # fmt: skip
        require_int(cfg[key], key, least)
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
    if cfg.qat not in (True, False, "auto"):
        raise ConfigError(f"qat={cfg.qat} is invalid; allowed: auto, true, false")
    require_number(cfg.qat_lr, "qat_lr", 0.0, exclusive=True)
    require_number(cfg.max_acc_drop, "max_acc_drop", 0.0)
    if not cfg.get("out_dir"):
        raise ConfigError("out_dir is empty; allowed: a folder (default deploy)")


def _data(info: dict[str, Any]):
    data_cfg = OmegaConf.create(info["config"]["data"])
    try:
        dm = hydra.utils.instantiate(data_cfg)
        dm.prepare_data()
        dm.setup()
    except TinyCVAEError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"the checkpoint's data set cannot be loaded: {err}") from None
    return dm


def _calibration(model: CVAE, dm, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The latents the decoder sees: the first ``n`` training images' (posterior means or
    known factors) and ``n`` draws of the model's sampler, with their labels."""
    train = dm.splits.train
    k = min(n, len(train.labels))
    sub = type(train)(train.images[:k], train.labels[:k], train.factors[:k])
    z_train = latents_of(model, sub)
    labels = balanced_labels(n, model.num_classes)
    gen = torch.Generator().manual_seed(seed)
    z_drawn = model.sampler(labels, gen)
    return torch.cat([z_train.cpu(), z_drawn]), torch.cat([sub.labels.cpu(), labels])


def _pipe(build_dir: Path, labels: np.ndarray, zq: np.ndarray, out_size: int) -> np.ndarray:
    """Images from the host build's ``cvae_pipe``: one record per (label, z)."""
    records = np.concatenate([labels.astype(np.uint8)[:, None], zq.view(np.uint8)], axis=1)
    done = subprocess.run(
        [str(build_dir / "host" / "cvae_pipe")], input=records.tobytes(), capture_output=True
    )
    if done.returncode != 0:
        raise toolchain.ToolchainError(f"cvae_pipe failed: {done.stderr.decode()[:300]}")
    return np.frombuffer(done.stdout, dtype=np.uint8).reshape(len(labels), out_size)


def export_onnx(model: CVAE, path: Path) -> None:
    """The float decoder, ``(z [N, latent], label [N] int64) -> image [N, C, H, W]``."""

    class Images(torch.nn.Module):
        def __init__(self, decoder: torch.nn.Module) -> None:
            super().__init__()
            self.decoder = decoder

        def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.decoder(z, label))

    z = torch.zeros(1, model.latent)
    label = torch.zeros(1, dtype=torch.long)
    torch.onnx.export(
        Images(model.decoder).eval(),
        (z, label),
        str(path),
        input_names=["z", "label"],
        output_names=["image"],
        dynamic_axes={"z": {0: "n"}, "label": {0: "n"}, "image": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export, build and verify; returns the report (also written to report.json)."""
    _settings(cfg)
    targets = toolchain.check_targets(list(cfg.targets))
    mcu = load_mcu(cfg.mcu.name) if cfg.get("mcu") else None
    out_dir = Path(cfg.out_dir).resolve()
    final = out_dir / "model"
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        report = _export(cfg, targets, mcu, scratch)
        _swap_in(scratch / "model", final, scratch / "previous")
        log.info("wrote %s", final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        run_dir = log_wandb(report, final, cfg.get("wandb") or {})
    except Exception as err:  # noqa: BLE001 - the firmware is written; tracking is extra
        log.warning("the export is in %s; logging it to W&B failed: %s", final, err)
        run_dir = None
    if run_dir:
        log.info("W&B run (job_type export, artifact type firmware): %s", run_dir)
    return report


def _flat(report: dict[str, Any]) -> dict[str, float]:
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
    """A W&B run (job_type ``export``) with the report's figures, a table of the targets
    and the firmware (``model_dir``) as an artifact of type ``firmware``. Offline unless
    logged in (``wandb.mode``); the run lives in ``model_dir/wandb``. Returns its folder."""
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
        run.summary.update(_flat(report))
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


def _export(cfg: DictConfig, targets, mcu: MCUProfile | None, scratch: Path) -> dict[str, Any]:
    source = resolve_source(cfg, scratch)
    model, info = load_model(source.checkpoint)
    fm = extract(model.decoder, model.latent, model.num_classes)

    estimates: dict[str, Any] = {}
    for target in targets:
        if target.mcu:
            estimates[target.name] = check_fit(model, load_mcu(target.mcu), target.name)
    if mcu is not None:
        estimates.setdefault(f"mcu:{mcu.name}", check_fit(model, mcu, f"mcu={mcu.name}"))

    dm = _data(info)
    scorer = _scorer(cfg, model, dm, info)
    z_cal, y_cal = _calibration(model, dm, cfg.calib_samples, cfg.seed)
    qm = quantize(fm, z_cal, y_cal, model.bypass)
    quality = {
        "samples": len(scorer.labels),
        "evaluator": scorer.path,
        "acc_pytorch": scorer.acc(scorer.reference),
        "acc_int8_ptq": scorer.acc(scorer.int8(qm)),
    }
    drop = quality["acc_pytorch"] - quality["acc_int8_ptq"]
    quality["qat"] = cfg.qat is True or (cfg.qat == "auto" and drop > cfg.max_acc_drop)
    if quality["qat"]:
        log.info("int8 post-training costs %.1f points: quantisation-aware fine-tuning", 100 * drop)
        tuned = finetune(fm, qm, z_cal, y_cal, cfg.qat_epochs, cfg.qat_lr, seed=cfg.seed)
        qm_tuned = quantize(tuned, z_cal, y_cal, model.bypass)
        quality["acc_int8_qat"] = scorer.acc(scorer.int8(qm_tuned))
        if quality["acc_int8_qat"] >= quality["acc_int8_ptq"]:
            qm = qm_tuned  # else the post-training model ships: fine-tuning did not help
    quality["shipped"] = "qat" if qm.float_model is not fm else "ptq"

    # golden vectors: fixed labels and latents drawn by the model's sampler
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    g_labels = balanced_labels(cfg.golden_count, model.num_classes)
    g_z = model.sampler(g_labels, gen)
    g_zq = qm.quantize_z(g_z)
    g_y = g_labels.numpy().astype(np.uint8)
    model_dir = scratch / "model"
    codegen.write_model(
        model_dir / "int8", qm.float_model, "int8", model.bypass, model.sample_std,
        (g_y, g_zq, run_int8(qm, g_zq, g_y).reshape(len(g_y), -1)), qm,
    )  # fmt: skip
    codegen.write_model(
        model_dir / "fp32", fm, "fp32", model.bypass, model.sample_std,
        (g_y, g_z.numpy(), run_fp32(fm, g_z, g_labels).reshape(len(g_y), -1).numpy()),
    )  # fmt: skip
    export_onnx(model, model_dir / "decoder.onnx")

    build = scratch / "build"
    results: dict[str, Any] = {}
    for target in targets:
        results[target.name] = _build_and_check(target, model_dir, build, estimates)

    if "host" in results:
        quality |= _c_quality(scorer, qm, build)
    shipped = quality["acc_c_int8"] if "acc_c_int8" in quality else scorer.acc(scorer.int8(qm))
    drop = quality["acc_pytorch"] - shipped
    if drop > cfg.max_acc_drop:
        log.warning("the int8 decoder scores %.1f points below the PyTorch model", 100 * drop)
    report = {
        "created": now_iso(),
        "source": source.how,
        "checkpoint": str(source.checkpoint),
        "model": {
            k: info["config"]["model"].get(k)
            for k in ("arch", "latent", "latent_mode", "sampler", "dim1", "dim2", "dim3",
                      "dim4", "hidden")
            if k in info["config"]["model"]
        } | {"conditioning": info["config"]["model"].get("conditioning", {}).get("kind"),
             "data": info["config"]["data"].get("name"),
             "stages": [f"{s.kind} {s.in_shape}->{s.out_shape}" for s in fm.stages]},
        "quantisation": {
            "z_scale": qm.z_scale,
            "z_one": qm.z_one,
            "logit_scale": qm.logit_scale,
            "table_shift": qm.table_shift,
            "activation_scales": qm.act_scales,
            "calibration_samples": int(len(y_cal)),
        },
        "quality": quality,
        "targets": results,
        "mcu": mcu.name if mcu else None,
        "files": sorted(
            str(p.relative_to(scratch / "model")) for p in model_dir.rglob("*") if p.is_file()
        ) + ["report.json"],
    }  # fmt: skip
    (model_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _build_and_check(target, model_dir: Path, build: Path, estimates) -> dict[str, Any]:
    name = target.name
    if name == "host":
        out: dict[str, Any] = {}
        for precision in ("int8", "fp32"):
            b = build / precision
            toolchain.make("host", model_dir / precision, b)
            ok, n = toolchain.golden_result(toolchain.make("check-host", model_dir / precision, b))
            if ok != n:
                raise toolchain.ToolchainError(
                    f"host {precision} build reproduces {ok} of {n} golden vectors"
                )
            out[f"golden_{precision}"] = f"{ok}/{n}"
        return out
    if target.check:  # an emulator runs the golden test
        text = toolchain.make(target.check, model_dir / "int8", build / "int8")
        ok, n = toolchain.golden_result(text)
        if ok != n:
            raise toolchain.ToolchainError(
                f"the {name} build reproduces {ok} of {n} golden vectors"
            )
        return {
            "golden_int8": f"{ok}/{n}",
            "instructions_per_image": toolchain.instructions_per_image(text),
            "stack_high_water_bytes": toolchain.stack_high_water(text),
            "machine": target.machine,
        }
    toolchain.make(name, model_dir / "int8", build / "int8")
    measured = toolchain.elf_size(target, build / "int8")
    est = estimates[name]
    mcu = load_mcu(target.mcu)
    return {
        "mcu": mcu.name,
        "budget": {"flash_bytes": mcu.flash_bytes, "ram_bytes": mcu.ram_bytes},
        "measured": measured,
        "estimated": est,
        "flash_error": round(est["flash_bytes"] / measured["flash_bytes"] - 1, 4),
        "ram_error": round(est["ram_bytes"] / measured["ram_bytes"] - 1, 4),
    }


@dataclass
class Scorer:
    """Fixed labels and latents, the PyTorch model's images for them, and the evaluator
    that scores any decoder's images for the same inputs."""

    evaluator: Any
    path: str
    labels: torch.Tensor
    z: torch.Tensor
    reference: torch.Tensor  # the PyTorch model's images in [0, 1]

    def acc(self, images: torch.Tensor) -> float:
        return accuracy(self.evaluator, images, self.labels)

    def int8(self, qm: QuantModel) -> torch.Tensor:
        """The int8 reference's images (what the C decoder draws, byte for byte)."""
        px = run_int8(qm, qm.quantize_z(self.z), self.labels.numpy())
        return torch.from_numpy(px).float() / 255


def _scorer(cfg: DictConfig, model: CVAE, dm, info: dict[str, Any]) -> Scorer:
    settings = EvaluatorSettings(**(info["config"].get("evaluator") or {}))
    data_dir = info["config"].get("paths", {}).get("data_dir")
    record = load_or_train(dm.splits, dm.spec, dm.cache_key(), data_dir, settings, progress=True)
    check_floor(record, settings.floor)
    labels = balanced_labels(cfg.eval_samples, model.num_classes)
    z = model.sampler(labels, torch.Generator().manual_seed(cfg.seed + 2))
    with torch.no_grad():
        reference = torch.sigmoid(model.decoder(z, labels))
    return Scorer(record.evaluator.cpu(), str(record.path), labels, z, reference)


def _c_quality(scorer: Scorer, qm: QuantModel, build: Path) -> dict[str, Any]:
    """The C decoder's own images (host build) for the scorer's inputs: equal to the int8
    reference's, scored by the evaluator, and their MSE against the PyTorch images."""
    int8 = scorer.int8(qm)
    y = scorer.labels.numpy()
    c_pixels = _pipe(build / "int8", y, qm.quantize_z(scorer.z), int8[0].numel())
    c_images = torch.from_numpy(c_pixels.copy()).float().reshape(int8.shape) / 255
    if not torch.equal(c_images, int8):
        raise toolchain.ToolchainError("the C decoder's images differ from the int8 reference")
    acc = scorer.acc(c_images)
    return {
        "c_matches_reference": True,
        "acc_c_int8": acc,
        "acc_drop": scorer.acc(scorer.reference) - acc,
        "int8_vs_fp32_mse": float(((c_images - scorer.reference) ** 2).mean()),
    }
