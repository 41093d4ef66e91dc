"""``src/export.py``: export a trained run's decoder to C firmware with the exporter
(:mod:`tinycvae.deploy.export`), then print its report as JSON, the per-layer breakdown
(kind, shapes, MACs, flash and activation bytes) and the timing per target as tables."""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig

from tinycvae.deploy.export import export
from tinycvae.deploy.report import format_layers, format_timing


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export, build and verify (:func:`tinycvae.deploy.export.export`), print the report;
    return it (also written to ``<out_dir>/model/report.json``)."""
    report = export(cfg)
    print(json.dumps(report, indent=2))
    print(format_layers(report["layers"]))
    print(format_timing(report["targets"]))
    return report
