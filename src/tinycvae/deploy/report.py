"""The export's report: what was exported and from where, its stages and quantisation,
its quality and what each target measured; written as ``report.json`` beside the firmware
and returned (and printed) by the export."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tinycvae.deploy.quantize import QuantModel
from tinycvae.deploy.source import Source
from tinycvae.mcu.footprint import MCUProfile, estimate_stages
from tinycvae.mcu.stages import FloatModel
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
        "precision": qm.precision,
        "quantisation": {
            "precision": qm.precision,
            "weight_bits": qm.bits,
            "z_scale": qm.z_scale,
            "z_one": qm.z_one,
            "logit_scale": qm.logit_scale,
            "table_shift": qm.table_shift,
            "activation_scales": qm.act_scales,
            "calibration_samples": int(calibration_samples),
        },
        "layers": layer_breakdown(fm, targets, qm.precision),
        "quality": quality,
        "targets": targets,
        "mcu": mcu.name if mcu else None,
        "files": sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
        + ["report.json"],
    }


def write_report(model_dir: Path, report: dict[str, Any]) -> None:
    (model_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def record_in_run(report: dict[str, Any]) -> Path | None:
    """A copy of the report in the exported run's folder, ``<run>/exports/<precision>.json``
    (where ``src/pareto.py --min-acc`` reads the C decoder's accuracy); None when the
    checkpoint is not in a run folder (``<run>/checkpoints/*.ckpt`` beside summary.json)."""
    ckpt = Path(report["checkpoint"])
    run_dir = ckpt.parent.parent
    if ckpt.parent.name != "checkpoints" or not (run_dir / "summary.json").is_file():
        return None
    path = run_dir / "exports" / f"{report['precision']}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# the emulator targets whose golden test times each stage, and the code they run
CORES = {"qemu": "armv6m", "qemu-rv32": "rv32ec"}


def layer_breakdown(
    fm: FloatModel, targets: dict[str, Any] | None = None, precision: str = "int8"
) -> list[dict[str, Any]]:
    """Per deployed item of the ``precision`` (int8 or int4) firmware (the class table,
    each stage, the sigmoid table): kind, shapes, MACs, bytes of constants in flash
    (weights, int4 ones packed two per byte; biases, requant words; table entries) and
    bytes of activations it reads and writes (uint8: 1 B per element; stage 0 reads the
    int8 z; the sigmoid is a lookup fused into the last stage); with the emulators'
    results in ``targets``, each stage's instructions under QEMU
    (``instructions_armv6m``, ``instructions_rv32ec``; the class table and the sigmoid
    are counted in stage 0 and the last stage)."""
    rows = []
    for layer in estimate_stages(fm.to("cpu"), precision).layers:
        ins, outs = math.prod(layer.in_shape), math.prod(layer.out_shape)
        acts = 0 if layer.kind in ("class_table", "sigmoid_lut") else ins + outs
        rows.append({
            "name": layer.name, "kind": layer.kind, "in": _shape(layer.in_shape),
            "out": _shape(layer.out_shape), "macs": layer.macs,
            "weight_bytes": layer.flash_bytes, "activation_bytes": acts,
        })  # fmt: skip
    for target, core in CORES.items():
        counts = (targets or {}).get(target, {}).get("instructions_per_stage")
        if counts and len(counts) == len(rows) - 2:
            for row, n in zip(rows, [None, *counts, None]):
                row[f"instructions_{core}"] = n
        parts = (targets or {}).get(target, {}).get("cycles", {}).get("parts") or []
        if parts and len(parts[0]["cycles_per_stage"]) == len(rows) - 2:
            part = parts[0]
            for row, c in zip(rows[1:-1], part["cycles_per_stage"]):
                row[f"cycles_{core}"] = c
                row[f"us_{core}"] = round(c / part["clock_mhz"], 1)
    return rows


def _total(rows: list[dict[str, Any]], key: str) -> str:
    total = sum(r.get(key) or 0 for r in rows)
    return f"{total:.1f}" if key.startswith("us_") else str(total)


def format_layers(rows: list[dict[str, Any]]) -> str:
    """The breakdown as a text table with a total line (printed at the end of an export)."""
    head = ["layer", "kind", "in", "out", "MACs", "flash B", "act. B"]
    keys = ["name", "kind", "in", "out", "macs", "weight_bytes", "activation_bytes"]
    total = ["total", "", "", "", str(sum(r["macs"] for r in rows)),
             str(sum(r["weight_bytes"] for r in rows)), ""]  # fmt: skip
    for core in CORES.values():
        for key, title in (
            (f"instructions_{core}", f"instr. {core}"),
            (f"cycles_{core}", f"cycles {core}"),
            (f"us_{core}", f"us {core}"),
        ):
            if any(r.get(key) is not None for r in rows):
                head.append(title)
                keys.append(key)
                total.append(_total(rows, key))
    body = [["" if r.get(k) is None else str(r[k]) for k in keys] for r in rows]
    table = [list(head), *body, total]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in
                         enumerate(zip(row, widths)))  # fmt: skip

    rule = "-" * len(line(table[0]))
    lines = [line(table[0]), rule, *map(line, body), rule, line(total)]
    return "\n".join(ln.rstrip() for ln in lines)


def format_timing(targets: dict[str, Any]) -> str:
    """One line per part that runs an emulator target's code: the modelled cycles and
    microseconds per image (the table's cycle columns are the first part's)."""
    lines = []
    for target, core in CORES.items():
        block = (targets.get(target) or {}).get("cycles") or {}
        for p in block.get("parts", []):
            lines.append(
                f"{core} on {p['part']} ({p['core']}, {p['clock_mhz']:g} MHz, "
                f"{p['flash_wait_states']} flash wait states): {p['cycles_per_image']:,} cycles, "
                f"{p['us_per_image']:,.1f} us per image (modelled from QEMU's instruction mix)"
            )
    return "\n".join(lines)
