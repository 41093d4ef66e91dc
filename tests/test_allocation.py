"""threads=auto from the CPUs this process may use (tinycvae.devices.allocated_cpus): the
affinity mask, a cgroup CPU quota (v1 and v2) and SLURM_CPUS_PER_TASK, the smallest
winning, divided among the jobs that run at once; recorded in the summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tinycvae import devices

from conftest import TINY, TRAIN, needs_tools


def fake_cgroup(tmp_path: Path, lines: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(lines)
    return root, proc


def test_a_cgroup_v2_quota_counts_whole_cpus_and_the_tightest_parent_wins(tmp_path):
    root, proc = fake_cgroup(
        tmp_path,
        "0::/docker/job\n",
        {"cpu.max": "max 100000\n", "docker/cpu.max": "150000 100000\n",
         "docker/job/cpu.max": "400000 100000\n"},
    )  # fmt: skip
    assert devices.cgroup_cpu_quota(root, str(proc)) == 2  # docker --cpus=1.5 -> 2 threads


def test_a_cgroup_v1_quota_and_no_quota(tmp_path):
    root, proc = fake_cgroup(
        tmp_path,
        "4:memory:/x\n2:cpu,cpuacct:/slurm/job_7\n",
        {"cpu/slurm/job_7/cpu.cfs_quota_us": "300000\n",
         "cpu/slurm/job_7/cpu.cfs_period_us": "100000\n",
         "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
    )  # fmt: skip
    assert devices.cgroup_cpu_quota(root, str(proc)) == 3
    root, proc = fake_cgroup(tmp_path / "none", "0::/\n", {"cpu.max": "max 100000\n"})
    assert devices.cgroup_cpu_quota(root, str(proc)) is None
    assert devices.cgroup_cpu_quota(root, str(tmp_path / "no-such-file")) is None


def test_slurm_counts_only_inside_a_job_and_the_smallest_count_wins(tmp_path):
    empty = tmp_path / "cgroup"
    outside = devices.allocated_cpus({"SLURM_CPUS_PER_TASK": "1"}, empty)
    assert "slurm" not in outside  # a stale variable outside a job says nothing
    inside = devices.allocated_cpus({"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "1"}, empty)
    assert inside["slurm"] == 1 and inside["cores"] == os.cpu_count()
    assert devices.cpu_threads("auto", 1, inside) == 1
    on_node = devices.allocated_cpus({"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "3"}, empty)
    assert on_node["slurm"] == 3
    many = {"cores": 64, "affinity": 64, "slurm": 4}
    assert devices.cpu_threads("auto", 1, many) == 4  # a 64-core node, cpus_per_task=4
    assert devices.cpu_threads("auto", 2, many) == 2  # two joblib jobs in that allocation
    assert devices.cpu_threads("auto", 8, many) == 1
    assert devices.cpu_threads(16, 1, many) == 16  # an explicit number stays as given


@needs_tools("taskset", install="util-linux")
def test_a_job_under_taskset_takes_one_thread_and_says_why(tmp_path):
    proc = subprocess.run(
        ["taskset", "-c", "0", sys.executable, str(TRAIN), "logger=none", "metrics=none", *TINY],
        cwd=tmp_path, env={**os.environ, "TINYCVAE_ROOT": str(tmp_path)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # on a machine with srun (the test cluster's), Lightning's srun HINT stays unsaid
    assert "srun` command is available" not in proc.stderr
    assert "litlogger" not in proc.stdout + proc.stderr
    (path,) = (tmp_path / "logs" / "runs").glob("*/summary.json")
    summary = json.loads(path.read_text())
    assert summary["threads"] == 1
    assert summary["cpus"]["affinity"] == 1 and summary["cpus"]["jobs_at_once"] == 1
