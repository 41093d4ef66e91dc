"""An Optuna study as Pareto rows: the end-of-search report and ``src/pareto.py``'s
``--optuna-storage URL --study NAME`` source.

Each trial the sweeper ran carries its run folder and a compact copy of the run's
``summary.json`` (config, footprint, metrics) as user attributes, so the study alone is
enough to draw the front on a machine that holds none of the run folders. Trials without
it (another tool's) fall back to their parameters and objective values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from tinycvae.errors import ConfigError
from tinycvae.front.core import mark_fronts
from tinycvae.front.outputs import plot, write_table
from tinycvae.front.rows import row_from_summary
from tinycvae.search.storage import Storage, open_storage, quiet_optuna

SURPLUS_ATTR = "tinycvae:surplus"  # a trial asked past n_trials by a racing worker: never run


def _nested(params: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for key, value in params.items():
        node = cfg
        *parents, leaf = key.lstrip("+~").split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def precision_of(names: list[str] | None, default: str = "int8") -> str:
    for name in names or []:
        m = re.fullmatch(r"mcu/(\w+)/flash_bytes", name)
        if m:
            return m.group(1)
    return default


def trial_summary(trial: FrozenTrial, metric_names: list[str] | None) -> dict[str, Any]:
    """A summary.json-like record of a finished trial (its own copy, or one rebuilt)."""
    s = json.loads(json.dumps(trial.user_attrs.get("summary") or {}))
    if not s:
        cfg = _nested(trial.params)
        model = cfg.setdefault("model", {})
        if any(f"dim{i}" in model for i in range(1, 5)):
            model.setdefault("arch", "conv")
        s = {"config": cfg}
    s.setdefault(
        "run_dir", trial.user_attrs.get("run_dir") or trial.user_attrs.get("sweep_dir", "")
    )
    metrics = s.setdefault("metrics", {})
    if trial.values and metric_names:
        metrics.update(zip(metric_names, trial.values))
    footprint = s.setdefault("footprint", {})
    for key, value in list(metrics.items()):
        m = re.fullmatch(r"mcu/(\w+)/(flash_bytes|ram_bytes|ram_bytes_streamed)", key)
        if m:
            footprint.setdefault(m.group(1), {}).setdefault(m.group(2), value)
    if trial.state == TrialState.COMPLETE:
        s["status"] = "ok"
    elif s.get("status") in (None, "ok", "running"):
        reason = trial.user_attrs.get("fail_reason") or f"trial {trial.state.name.lower()}"
        s["status"] = f"failed: {reason}"
    s["name"] = f"{s['name']} (trial {trial.number})" if s.get("name") else f"trial {trial.number}"
    return s


def rows_from_study(study: optuna.Study, precision: str | None = None) -> list:
    """Pareto rows (tinycvae.front.rows.RunRow) of a study's finished trials: complete ones,
    failed ones (listed apart), and killed ones whose slot was retried."""
    trials = study.get_trials(deepcopy=False)
    with quiet_optuna():  # the retry that took each killed trial's slot
        retried = {
            RetryHeartbeatStaleTrialCallback.retry_history(t)[-1]: t.number
            for t in trials
            if RetryHeartbeatStaleTrialCallback.retry_history(t)
        }
    names = study.metric_names
    precision = precision or precision_of(names)
    rows = []
    for t in trials:
        if SURPLUS_ATTR in t.user_attrs or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        s = trial_summary(t, names)
        if t.number in retried:
            s["status"] = f"failed: its worker died; retried as trial {retried[t.number]}"
        rows.append(row_from_summary(s, precision))
    return rows


def load_study(spec: str, study_name: str | None) -> tuple[optuna.Study, Storage]:
    """Read an existing study (nothing is created); ConfigError naming what is allowed."""
    storage = open_storage(spec, create=False, key="--optuna-storage")
    with quiet_optuna():
        names = optuna.get_all_study_names(storage.optuna)
    if not names:
        raise ConfigError(f"--optuna-storage={spec} holds no study")
    if study_name is None:
        if len(names) > 1:
            raise ConfigError(
                f"--optuna-storage={spec} holds {len(names)} studies; pass --study, "
                f"allowed: {', '.join(sorted(names))}"
            )
        study_name = names[0]
    if study_name not in names:
        raise ConfigError(
            f"--study={study_name}: no such study in {storage.describe()}; allowed: "
            f"{', '.join(sorted(names))}"
        )
    with quiet_optuna():
        return optuna.load_study(study_name=study_name, storage=storage.optuna), storage


def default_out(storage: Storage) -> Path:
    """Where a study's pareto files go by default: beside its journal or SQLite file."""
    return storage.path.parent if storage.path is not None else Path(".")


def front_lines(study: optuna.Study) -> list[str]:
    """The study's own Pareto front (its objectives and directions), one line per trial."""
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    arrows = ["↓" if d.name == "MINIMIZE" else "↑" for d in study.directions]
    with quiet_optuna():
        best = study.best_trials if len(study.directions) > 1 else _best_single(study)
    head = ", ".join(f"{n} {a}" for n, a in zip(names, arrows))
    lines = [f"Pareto front of study {study.study_name} ({head}): {len(best)} trial(s)"]
    for t in sorted(best, key=lambda t: tuple(t.values)):
        values = "  ".join(f"{n}={_num(v)}" for n, v in zip(names, t.values))
        params = " ".join(f"{k}={v}" for k, v in t.params.items())
        lines.append(f"  trial {t.number}: {values}  [{params}]  {t.user_attrs.get('run_dir', '')}")
    return lines


def _best_single(study: optuna.Study) -> list[FrozenTrial]:
    try:
        return [study.best_trial]
    except ValueError:
        return []


def _num(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.4g}"


def report(study: optuna.Study, out_dir: Path, storage: Storage, ran: int) -> dict[str, Path]:
    """Print the study's front and counts; write optimization_results.yaml and pareto.{csv,
    md,png} (as src/pareto.py does) into ``out_dir`` (the sweep folder)."""
    from omegaconf import OmegaConf

    trials = study.get_trials(deepcopy=False)
    states = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    print(
        f"search: study {study.study_name} in {storage.describe()}: {len(trials)} trials "
        f"({counts}); this process ran {ran}",
        flush=True,
    )
    print("\n".join(front_lines(study)), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_optuna():
        best = study.best_trials if len(study.directions) > 1 else _best_single(study)
    results = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": storage.describe(),
        "metric_names": study.metric_names,
        "solutions": [
            {"number": t.number, "params": dict(t.params), "values": list(t.values)} for t in best
        ],
    }
    paths = {"yaml": out_dir / "optimization_results.yaml"}
    OmegaConf.save(OmegaConf.create(results), paths["yaml"])
    try:
        precision = precision_of(study.metric_names)
        rows = rows_from_study(study, precision)
        mark_fronts(rows)
        paths.update(write_table(rows, out_dir, precision))
        paths["png"] = plot(rows, out_dir / "pareto.png", precision)
    except Exception as err:  # noqa: BLE001 - the study is safe; only the drawing failed
        print(f"warning: pareto files not written: {err}", flush=True)
    print("wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    return paths
