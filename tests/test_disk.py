"""A full disk (issue 20, item 5): a checkpoint is written whole or not at all, ENOSPC is
one line naming the folder and what was kept, and the summary says ``failed: …``
whenever the exit status is non-zero. The run folder is a small tmpfs."""

from __future__ import annotations

import subprocess
import uuid

import pytest
import torch

from tinycvae.summary import read_summary

from conftest import TINY, run_train


@pytest.fixture
def small_disk(tmp_path):
    """A mount of a ``size`` tmpfs under ``tmp_path`` (root only), unmounted afterwards."""
    mounts = []

    def mount(size: str):
        folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", str(folder)], check=False)


# ~80 kB per checkpoint of the tiny job: 100k holds none, 200k holds best and last once.
@pytest.mark.parametrize(
    "size, kept",
    [("100k", "no .ckpt file"), ("200k", "the previous best.ckpt, last.ckpt")],
)
def test_a_full_disk_keeps_whole_checkpoints_and_says_so_in_one_line(
    small_disk, tmp_path, size, kept
):
    run_dir = small_disk(size) / "run"
    args = [*TINY, "logger=none", "metrics=none", "trainer.max_epochs=3"]
    done = run_train([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr
    why = (
        f"no space left on device in {run_dir}/checkpoints: best.ckpt not written "
        f"(kept there: {kept})"
    )
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line == f"error: run failed: {why} (see {run_dir}/summary.json)"
    summary = read_summary(run_dir)
    assert summary["status"] == f"failed: {why}"  # the record matches the exit status
    files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert files == sorted(
        summary["checkpoints"][n].rsplit("/", 1)[1] for n in summary["checkpoints"]
    )
    for name in files:  # whole, or not there at all; no temporary file left
        assert torch.load(run_dir / "checkpoints" / name, weights_only=True)["epoch"] == 0
    assert not [p for p in run_dir.rglob(".*.tmp")]
