"""Where the checkout's own folders are: its ``conf/`` (the Hydra configs every command
composes and the MCU profiles) and its ``deploy/`` (the C runtime the exporter builds).
tinycvae runs from a checkout or an editable install, so both sit beside ``src/``."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
DEPLOY_DIR = ROOT / "deploy"
