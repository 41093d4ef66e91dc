"""A sweep's jobs as one SLURM array (``hydra/launcher=slurm``), on the partition named.

Before anything is submitted (:func:`preflight`, from the launcher's ``setup``): SLURM's
commands are there, the partition exists (``sinfo``), and ``gpus_per_node`` fits it:
``auto`` is 1 when ``sinfo`` lists GPU gres on the partition and none otherwise; a number
of GPUs on a partition without them is refused. Each refusal is one ``error:`` line and
exit 2; so is an array ``sbatch`` itself refuses (SLURM's own reason: an unknown account,
a QoS, more CPUs or memory than a node has), with nothing submitted.

While the array runs (:func:`launch`), each job's end is one line; job states come from
``sacct`` where the cluster keeps accounting and from ``scontrol`` where it does not (no
``Bypassing sacct error`` warnings, and a cancelled job is seen as ended instead of
waited for). A job that ends without a result (``scancel``, a lost node, its time limit)
is reported and returns no value, as a failed job does: the sweep's other jobs go on and
its end report lists it (its ``summary.json`` says how it ended, when it had time to).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.slurm.slurm import SlurmExecutor, SlurmInfoWatcher, SlurmJob

from tinycvae.errors import ConfigError
from tinycvae.summary import read_summary

log = logging.getLogger(__name__)

KEY = "hydra.launcher"
COMMANDS = ("sbatch", "sinfo", "srun")
FOLDER_KEYS = ("submitit_folder", "max_num_timeout")  # the executor's, not sbatch's


@dataclass
class Partition:
    """A partition as ``sinfo`` lists it: its name, whether it is the default, its gres."""

    name: str
    default: bool = False
    gres: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> bool:
        return any(g.split(":")[0] == "gpu" for g in self.gres)


def parse_sinfo(text: str) -> dict[str, Partition]:
    """``sinfo -h -o '%P|%G'`` -> partitions by name (a partition's node groups merged;
    ``*`` marks the default; ``(null)`` is no gres)."""
    parts: dict[str, Partition] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        name, gres = (s.strip() for s in line.split("|", 1))
        default = name.endswith("*")
        part = parts.setdefault(name.rstrip("*"), Partition(name.rstrip("*")))
        part.default = part.default or default
        for g in gres.split(","):
            g = g.strip()
            if g and g != "(null)" and g not in part.gres:
                part.gres.append(g)
    return parts


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConfigError(f"{command[0]} did not answer ({err})") from None
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip() or "no message").splitlines()[0]
        raise ConfigError(f"{' '.join(command[:2])} failed: {reason}")
    return done.stdout


def require_commands() -> None:
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise ConfigError(
            f"hydra/launcher=slurm needs SLURM's {', '.join(missing)}, not found on PATH; "
            "allowed: a machine with the SLURM client (sbatch, sinfo, srun), or "
            "hydra/launcher=local_submitit to run the same sweep on this machine"
        )


def choose_partitions(setting: Any, parts: dict[str, Partition]) -> list[Partition]:
    """The partitions ``hydra.launcher.partition`` names (SLURM takes a comma list; null:
    the cluster's default)."""
    listed = ", ".join(parts) or "none"
    if setting in (None, ""):
        default = [p for p in parts.values() if p.default]
        if not default:
            raise ConfigError(
                f"{KEY}.partition=null and SLURM has no default partition; allowed: {listed}"
            )
        return default
    chosen = []
    for name in str(setting).split(","):
        if name.strip() not in parts:
            raise ConfigError(
                f"{KEY}.partition={setting}: SLURM has no partition {name.strip()}; "
                f"allowed: {listed} (sinfo)"
            )
        chosen.append(parts[name.strip()])
    return chosen


def resolve_gpus(setting: Any, chosen: list[Partition], parts: dict[str, Partition]) -> int | None:
    """``gpus_per_node``: auto -> 1 when every chosen partition has GPU gres, else none;
    null/0 -> none; N >= 1 -> N, refused on a partition without GPUs."""
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        return 1 if all(p.gpus for p in chosen) else None
    if setting is None or setting == 0:
        return None
    if type(setting) is not int or setting < 0:
        raise ConfigError(
            f"{KEY}.gpus_per_node={setting} is invalid; allowed: auto, null or an integer >= 0"
        )
    without = [p for p in chosen if not p.gpus]
    if without:
        gpu_parts = ", ".join(p.name for p in parts.values() if p.gpus) or "none on this cluster"
        raise ConfigError(
            f"{KEY}.gpus_per_node={setting}: partition {without[0].name} has no GPUs (sinfo "
            f"lists its gres: {', '.join(without[0].gres) or 'none'}); allowed: auto, null "
            f"or 0 there, or a partition with GPUs ({gpu_parts})"
        )
    return setting


def preflight(params: dict[str, Any]) -> dict[str, Any]:
    """The launcher's settings with ``gpus_per_node`` resolved for its partition; a
    ConfigError (one line) for a missing SLURM, partition or GPU."""
    require_commands()
    parts = parse_sinfo(_run(["sinfo", "-h", "-o", "%P|%G"]))
    chosen = choose_partitions(params.get("partition"), parts)
    return {
        **params,
        "gpus_per_node": resolve_gpus(params.get("gpus_per_node"), chosen, parts),
        "partition": params.get("partition") or chosen[0].name,
    }


# --- job states without accounting ------------------------------------------------------


def parse_scontrol(text: str) -> dict[str, dict[str, str]]:
    """``scontrol show job -o`` -> {``<array id>_<task>`` or ``<job id>``: {JobID, State,
    NodeList}}, as submitit reads ``sacct``."""
    info: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "JobId" not in fields:
            continue
        state = {"State": fields.get("JobState", "UNKNOWN"), "NodeList": fields.get("NodeList", "")}
        array, tasks = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        if not array or not tasks:
            info[fields["JobId"]] = {"JobID": fields["JobId"], **state}
            continue
        for task in _task_ids(tasks):
            info[f"{array}_{task}"] = {"JobID": f"{array}_{task}", **state}
    return info


def _task_ids(spec: str) -> list[int]:
    ids: list[int] = []
    for piece in spec.split("%")[0].split(","):
        lo, _, hi = piece.partition("-")
        if lo.isdigit():
            ids.extend(range(int(lo), int(hi or lo) + 1))
    return ids


class StateWatcher(SlurmInfoWatcher):
    """submitit's watcher, asking ``scontrol`` when ``sacct`` fails (no accounting): no
    warning on every poll, and a job the controller no longer lists counts as ended."""

    def update(self) -> None:
        arrays = {x.split("_")[0] for x in self._registered - self._finished}
        if not arrays:
            return
        self._num_calls += 1
        command = self._make_command()
        try:
            out = subprocess.run(command, capture_output=True, check=True, timeout=60).stdout
            self._info_dict.update(self.read_info(out))
        except (OSError, subprocess.SubprocessError):
            self._info_dict.update(self._from_controller(arrays))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _from_controller(self, arrays: set[str]) -> dict[str, dict[str, str]]:
        info: dict[str, dict[str, str]] = {}
        for array in arrays:
            done = subprocess.run(
                ["scontrol", "show", "job", "-o", array], capture_output=True, text=True
            )
            info.update(parse_scontrol(done.stdout))
        for job_id in self._registered - self._finished:
            if job_id.split("_")[0] in arrays and job_id not in info:
                # purged after MinJobAge, or never known: it runs no more
                info[job_id] = {"JobID": job_id, "State": "ENDED", "NodeList": ""}
        return info


class ArrayJob(SlurmJob):
    watcher = StateWatcher(delay_s=30)


class Executor(SlurmExecutor):
    job_class = ArrayJob


# --- submission ---------------------------------------------------------------------------


def submit(executor: Executor, fn: Any, job_params: list[tuple]) -> list[ArrayJob]:
    """``executor.map_array``; an array ``sbatch`` refuses is a ConfigError with SLURM's
    own reason (submitit's echo of it is kept off the terminal)."""
    echoed = io.StringIO()
    try:
        with contextlib.redirect_stderr(echoed):
            jobs = executor.map_array(fn, *zip(*job_params))
    except FailedJobError as err:
        lines = [s for s in str(err).splitlines() if s.strip()] or ["no message"]
        reason = next((s for s in lines if "error" in s.lower()), lines[0]).strip()
        raise ConfigError(f"sbatch refused the array: {reason}") from None
    # submitit builds array tasks as plain SlurmJobs: watch them with StateWatcher instead
    return [ArrayJob(folder=executor.folder, job_id=j.job_id, tasks=j._tasks) for j in jobs]


def describe_array(jobs: list[ArrayJob], params: dict[str, Any]) -> str:
    array = jobs[0].job_id.split("_")[0]
    gpus = params.get("gpus_per_node") or 0
    cpus = params.get("cpus_per_task") or 1
    logs = str(params["submitit_folder"]).replace("%j", f"{array}_*")
    return (
        f"submitted SLURM array {array}: {len(jobs)} job{'s' if len(jobs) > 1 else ''} on "
        f"partition {params.get('partition')} ({cpus} CPU{'s' if cpus > 1 else ''}, "
        f"{gpus} GPU{'s' if gpus != 1 else ''} each); logs in {logs}/"
    )


def result_of(job: ArrayJob, num: int, overrides: Sequence[str], sweep_dir: Path) -> Any:
    """The job's JobReturn; for a job that ended without one, a line on stderr and a
    return without a value (the sweep goes on, its end report counts the job failed)."""
    from hydra.core.utils import JobReturn, JobStatus

    try:
        ret = job.results()[0]
    except UncompletedJobError as err:
        why = job.state if not isinstance(err, FailedJobError) else _last_line(str(err))
        print(
            f"warning: job {num} (SLURM {job.job_id}) ended without a result ({why}); "
            f"its log: {job.paths.stderr}",
            file=sys.stderr,
            flush=True,
        )
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        ret.return_value = None
    print(f"job {num} (SLURM {job.job_id}): {_status(sweep_dir / str(num))}", flush=True)
    return ret


def _status(run_dir: Path) -> str:
    try:
        return str(read_summary(run_dir).get("status", "unknown"))
    except (OSError, ValueError):
        return "no summary.json"


def _last_line(text: str) -> str:
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    return lines[-1][:300] if lines else "failed"


def _discard_refused(sweep_dir: Path) -> None:
    """Remove a sweep folder that holds only what was written for a refused array
    (Hydra's ``multirun.yaml``, submitit's pickles and sbatch script)."""
    if sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {
        "multirun.yaml",
        ".submitit",
    }:
        shutil.rmtree(sweep_dir, ignore_errors=True)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """Submit ``job_overrides`` as one array and wait for every job's JobReturn."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import filter_overrides

    from tinycvae.cli import fail

    params = dict(launcher.params)
    executor = Executor(params["submitit_folder"], max_num_timeout=params["max_num_timeout"])
    # the plugin's generic names (mem_gb, timeout_min, ...) -> sbatch's, as AutoExecutor does
    sbatch = executor._convert_parameters({k: v for k, v in params.items() if k not in FOLDER_KEYS})
    executor.update_parameters(**sbatch)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    job_params = []
    for num, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
        job_params.append(
            (list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state())
        )
    try:
        jobs = submit(executor, launcher, job_params)
    except ConfigError as err:
        _discard_refused(sweep_dir)
        fail(str(err))
    print(describe_array(jobs, params), flush=True)
    return [
        result_of(job, num, overrides, sweep_dir)
        for job, (overrides, _, num, _, _) in zip(jobs, job_params)
    ]
