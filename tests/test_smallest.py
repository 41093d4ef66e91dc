"""``src/pareto.py --select MCU --min-acc X``: the smallest decoder that fits the chip and
meets X, on a finished sweep's summaries and on an Optuna study; C accuracy where the run
was exported; the refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from tinycvae.data.base import DataSpec
from tinycvae.deploy.report import record_in_run
from tinycvae.front.rows import need
from tinycvae.front.smallest import scored
from tinycvae.front.summaries import collect_runs
from tinycvae.mcu.footprint import all_mcus, summary_dict
from tinycvae.models import build_cvae, count_params
from tinycvae.summary import compact_summary

SPEC = DataSpec("dice", 1, 32, 32, 6, tuple("123456"), ("angle", "scale"))
# dims -> gen/acc from PyTorch; all three fit the CH32V003, 64_64_64_64 does not.
RUNS = {(2, 2, 2, 2): 0.52, (3, 3, 3, 3): 0.995, (8, 8, 8, 8): 1.0, (64, 64, 64, 64): 1.0}
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def fake_sweep(root: Path) -> dict[tuple, Path]:
    """A finished sweep's folders: real footprints of real decoders, given accuracies."""
    folders = {}
    for num, (dims, acc) in enumerate(RUNS.items()):
        keys = dict(zip(("dim1", "dim2", "dim3", "dim4"), dims))
        model = build_cvae(SPEC, "conv", latent=1, latent_mode="bypass", **keys)
        run_dir = root / str(num)
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"weights")
        summary = {
            "run_dir": str(run_dir),
            "name": "dice-" + "_".join(map(str, dims)),
            "status": "ok",
            "config": {"data": {"name": "dice"}, "model": {"arch": "conv", **keys}, "beta": 1.0},
            "params": {"params/decoder": count_params(model.decoder)},
            "footprint": summary_dict(model.decoder, 1, 6, all_mcus()),
            "metrics": {"gen/acc": acc},
            "checkpoints": {"best": str(run_dir / "checkpoints" / "best.ckpt")},
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
        folders[dims] = run_dir
    return folders


def export_c(run_dir: Path, acc: float) -> None:
    """What src/export.py records in the run folder (tinycvae.deploy.report.record_in_run)."""
    (run_dir / "exports").mkdir()
    report = {
        "checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
        "precision": "int8",
        "quality": {"acc_pytorch": 0.995, "acc_c_int8": acc},
    }
    (run_dir / "exports" / "int8.json").write_text(json.dumps(report))


def pareto(argv: list[str], capsys) -> tuple[int, str, str]:
    from pareto import main

    try:
        code = main([*argv, "--wandb-mode", "disabled"])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_smallest_run_meeting_x_on_a_finished_sweep(tmp_path, capsys):
    folders = fake_sweep(tmp_path)
    code, out, _ = pareto([str(tmp_path), "--select", "ch32v003", "--min-acc", "0.99"], capsys)
    assert code == 0
    answer = out[out.index("smallest for ch32v003") :]
    assert "dims 3_3_3_3" in answer and "gen/acc 0.995 from PyTorch" in answer
    assert "expected to lose up to 1 point(s)" in answer  # conf/export.yaml's max_acc_drop
    assert f"checkpoint: {folders[(3, 3, 3, 3)] / 'checkpoints' / 'best.ckpt'}" in answer
    # Without --min-acc, --select keeps its meaning: the most accurate run that fits.
    code, out, _ = pareto([str(tmp_path), "--select", "ch32v003"], capsys)
    assert code == 0 and "checkpoint: " + str(folders[(8, 8, 8, 8)]) in out


def test_the_answer_prints_what_select_prints_the_chip_needs(tmp_path, capsys):
    """--min-acc's line and --select's line give one flash and one RAM figure for a run:
    what the decoder needs on the chip, reserve included (not the streamed activations)."""
    folders = fake_sweep(tmp_path)
    row = next(r for r in collect_runs([folders[(8, 8, 8, 8)]]))
    needs = need(row, "ch32v003")
    assert needs["ram_bytes"] > row.ram_bytes  # the reserve is on top of the activations
    # and the rv32ec build it is counted with (the CH32V003's tier, as its link picks it)
    figures = (
        f"flash {needs['flash_bytes']:.0f} B, RAM {needs['ram_bytes']:.0f} B, "
        "quarter-square rv32ec kernels"
    )
    code, out, _ = pareto([str(tmp_path), "--select", "ch32v003"], capsys)
    assert code == 0 and figures in out[out.index("selected for ch32v003") :]
    code, out, _ = pareto([str(tmp_path), "--select", "ch32v003", "--min-acc", "1"], capsys)
    assert code == 0 and figures in out[out.index("smallest for ch32v003") :]


def test_select_names_the_rv32ec_tier_only_where_one_is_recorded(tmp_path, capsys):
    """A core with a multiplier has no rv32ec tier, and a summary written before the tier
    was recorded prints none (its figures as before)."""
    folders = fake_sweep(tmp_path)
    code, out, _ = pareto([str(tmp_path), "--select", "cortex_m0plus_16k"], capsys)
    assert code == 0 and "rv32ec kernels" not in out[out.index("selected for") :]
    for run_dir in folders.values():
        path = run_dir / "summary.json"
        summary = json.loads(path.read_text())
        for entry in summary["footprint"].values():
            del entry["rv32ec_tier"]
        path.write_text(json.dumps(summary))
    code, out, _ = pareto([str(tmp_path), "--select", "ch32v003"], capsys)
    answer = out[out.index("selected for ch32v003") :]
    assert code == 0 and "rv32ec kernels" not in answer
    assert re.search(r", RAM \d+ B$", answer.splitlines()[0]), answer  # the figures end it


def test_an_exported_run_is_judged_by_its_c_accuracy(tmp_path, capsys):
    folders = fake_sweep(tmp_path)
    export_c(folders[(3, 3, 3, 3)], 0.982)  # int8 from C lost 1.3 points
    code, out, _ = pareto([str(tmp_path), "--select", "ch32v003", "--min-acc", "0.99"], capsys)
    assert code == 0
    answer = out[out.index("smallest for ch32v003") :]
    assert "dims 8_8_8_8" in answer and "from PyTorch" in answer
    code, out, _ = pareto([str(tmp_path), "--select", "ch32v003", "--min-acc", "0.98"], capsys)
    answer = out[out.index("smallest for ch32v003") :]
    assert "dims 3_3_3_3" in answer and "gen/acc 0.982 from C," in answer
    assert "not exported" not in answer


def test_no_run_meeting_x_lists_the_closest_and_how_far(tmp_path, capsys):
    fake_sweep(tmp_path)
    (tmp_path / "3" / "summary.json").unlink()  # no 64_64_64_64: nothing at 100% is left...
    summary = json.loads((tmp_path / "2" / "summary.json").read_text())
    summary["metrics"]["gen/acc"] = float("nan")  # ... and a NaN accuracy is never picked
    (tmp_path / "2" / "summary.json").write_text(json.dumps(summary))
    code, out, err = pareto([str(tmp_path), "--select", "ch32v003", "--min-acc", "1"], capsys)
    assert code == 2
    assert "0.5 points short: dice-3_3_3_3" in out and "48.0 points short: dice-2_2_2_2" in out
    assert "8_8_8_8" not in out.split("the closest:")[1]
    assert err.strip().splitlines() == [
        "error: no run that fits ch32v003 reaches gen/acc >= 1: the closest, dice-3_3_3_3, "
        "has 0.995 from PyTorch (0.5 points short)"
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--select", "ch32v003", "--min-acc", "0"], "--min-acc=0.0 is invalid; allowed: a"),
        (["--select", "ch32v003", "--min-acc", "1.5"], "--min-acc=1.5 is invalid; allowed: a"),
        (["--select", "ch32v003", "--min-acc", "nan"], "--min-acc=nan is invalid; allowed: a"),
        (["--min-acc", "0.9"], "--min-acc=0.9 needs --select MCU"),
    ],
)
def test_a_bad_min_acc_is_one_line_before_any_work(tmp_path, capsys, argv, message):
    fake_sweep(tmp_path)
    code, out, err = pareto([str(tmp_path), *argv], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "pareto.csv").exists() and out == ""


def test_the_smallest_run_meeting_x_in_an_optuna_study(tmp_path, capsys):
    folders = fake_sweep(tmp_path / "trials")
    journal = tmp_path / "study.journal"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.create_study(
        study_name="s", storage=storage, directions=["minimize", "maximize"]
    )
    study.set_metric_names(["mcu/int8/flash_bytes", "gen/acc"])
    dist = {f"model.dim{i}": CategoricalDistribution([2, 3, 8, 64]) for i in range(1, 5)}
    for dims, run_dir in folders.items():
        summary = compact_summary(run_dir)  # what the sweeper stores with each trial
        flash = summary["footprint"]["int8"]["flash_bytes"]
        study.add_trial(
            optuna.create_trial(
                params=dict(zip(dist, dims)),
                distributions=dist,
                values=[flash, RUNS[dims]],
                user_attrs={"run_dir": str(run_dir), "summary": summary},
            )
        )
    argv = ["--optuna-storage", str(journal), "--select", "ch32v003", "--min-acc", "0.999"]
    code, out, _ = pareto(argv, capsys)
    assert code == 0
    answer = out[out.index("smallest for ch32v003") :]
    assert "dims 8_8_8_8" in answer and "(trial 2)" in answer
    assert f"checkpoint: {folders[(8, 8, 8, 8)] / 'checkpoints' / 'best.ckpt'}" in answer


def test_the_export_records_its_report_in_the_run_folder_only(tmp_path):
    folders = fake_sweep(tmp_path)
    run_dir = folders[(3, 3, 3, 3)]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    report = {"checkpoint": str(ckpt), "precision": "int8", "quality": {"acc_c_int8": 0.97}}
    assert record_in_run(report) == run_dir / "exports" / "int8.json"
    (row,) = [r for r in collect_runs([tmp_path]) if r.run_dir == str(run_dir)]
    assert (scored(row, "int8").acc, scored(row, "int8").source) == (0.97, "C")
    assert scored(row, "int4").source == "PyTorch"  # another precision was not exported
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(b"weights")
    assert record_in_run({**report, "checkpoint": str(loose)}) is None  # not in a run folder
