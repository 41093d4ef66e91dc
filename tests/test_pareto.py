"""The Pareto logic on synthetic runs: ties, failed runs, several folders, selection."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest

from tinycvae.errors import ConfigError
from tinycvae.front.core import SelectError, mark_fronts, non_dominated, select
from tinycvae.front.summaries import collect_runs


def fake_run(folder, name, flash, acc, fid=10.0, ram=1000, status="ok", mode="bypass",
             fits_ch32=True):  # fmt: skip
    folder.mkdir(parents=True)
    summary = {
        "run_dir": str(folder),
        "name": name,
        "status": status,
        "config": {
            "data": {"name": "dice"},
            "beta": 1.0,
            "model": {
                "arch": "conv",
                "latent": 1,
                "latent_mode": mode,
                "dim1": 4,
                "dim2": 4,
                "dim3": 4,
                "dim4": 4,
                "conditioning": {"kind": "onehot"},
            },  # fmt: skip
        },
        "params": {"params/decoder": flash},
        "metrics": {} if status != "ok" else {"gen/acc": acc, "gen/fid_evaluator": fid},
        "checkpoints": {"best": str(folder / "checkpoints" / "best.ckpt")},
        "footprint": {
            "int8": {
                "flash_bytes": flash,
                "ram_bytes": ram,
                "ram_bytes_streamed": ram,
                "fits": {"ch32v003": fits_ch32, "rp2040": True},
                "over": {
                    "ch32v003": {"flash_bytes": 0 if fits_ch32 else flash - 14000, "ram_bytes": 0}
                },  # fmt: skip
            }
        },
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_non_dominated_with_ties_and_nan():
    pts = [(1.0, 0.5), (2.0, 0.9), (2.0, 0.9), (3.0, 0.8), (0.5, math.nan), (4.0, 1.0)]
    assert non_dominated(pts) == [True, True, True, False, False, True]


def test_fronts_over_several_folders_with_a_failed_run(tmp_path):
    fake_run(tmp_path / "a" / "0", "small", 1000, 0.20, fid=90)
    fake_run(tmp_path / "a" / "1", "mid", 3000, 0.98, fid=12)
    fake_run(tmp_path / "b" / "0", "big-worse", 9000, 0.95, fid=5)
    fake_run(tmp_path / "b" / "1", "broken", 500, 0.0, status="failed: non-finite loss")
    rows = collect_runs([tmp_path / "a", tmp_path / "b"])
    assert len(rows) == 4
    mark_fronts(rows)
    by = {r.name: r for r in rows}
    assert by["small"].front_acc and by["mid"].front_acc and not by["big-worse"].front_acc
    assert by["big-worse"].front_fid  # best FID, so on the flash-vs-FID front
    assert not by["broken"].front_acc and by["broken"].status.startswith("failed")


def test_select_picks_the_most_accurate_run_that_fits(tmp_path):
    fake_run(tmp_path / "0", "fits-ok", 2000, 0.97)
    fake_run(tmp_path / "1", "fits-best", 5000, 0.99, fid=20)
    fake_run(tmp_path / "2", "fits-tie-better-fid", 6000, 0.99, fid=8)
    fake_run(tmp_path / "3", "too-big", 40000, 1.0, fits_ch32=False)
    rows = collect_runs([tmp_path])
    assert select(rows, "ch32v003").name == "fits-tie-better-fid"
    assert select(rows, "rp2040").name == "too-big"


def test_select_says_how_far_the_smallest_run_is_over(tmp_path):
    fake_run(tmp_path / "0", "big", 30000, 1.0, fits_ch32=False)
    fake_run(tmp_path / "1", "bigger", 90000, 1.0, fits_ch32=False)
    with pytest.raises(SelectError, match=r"the smallest, big .*16000 B over"):
        select(collect_runs([tmp_path]), "ch32v003")


def test_a_folder_without_runs_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no runs"):
        collect_runs([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="precision=int3"):
        collect_runs([tmp_path], precision="int3")


def test_the_cli_writes_csv_markdown_and_plot_and_selects(tmp_path, capsys):
    import importlib.util

    from conftest import ROOT  # noqa: F401  (the src/ entry is importable via its path)

    fake_run(tmp_path / "s" / "0", "a", 1500, 0.9)
    fake_run(tmp_path / "s" / "1", "b", 2500, 1.0, mode="reparam")
    fake_run(tmp_path / "s" / "2", "c", 2600, 0.0, status="failed: metrics: boom")
    spec = importlib.util.spec_from_file_location("pareto_cli", ROOT / "src" / "pareto.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main([str(tmp_path / "s"), "--select", "ch32v003", "--wandb-mode", "disabled"]) == 0
    out = capsys.readouterr().out
    assert "selected for ch32v003" in out and str(tmp_path / "s" / "1") in out
    rows = list(csv.DictReader((tmp_path / "s" / "pareto.csv").open()))
    assert [r["name"] for r in rows] == ["a", "b", "c"]  # failed runs listed, last
    md = (tmp_path / "s" / "pareto.md").read_text()
    assert "## Failed runs" in md and "failed: metrics: boom" in md
    assert (tmp_path / "s" / "pareto.png").stat().st_size > 10_000
    with pytest.raises(SystemExit) as info:
        cli.main([str(tmp_path / "s"), "--select", "atmega328", "--wandb-mode", "disabled"])
    assert info.value.code == 2
    assert "mcu=atmega328 is unknown" in capsys.readouterr().err


# --- issue 20, item 9: --select never picks an unscored run, fronts skip infinities ------


def _with_metrics(folder, name, flash, metrics):
    fake_run(folder, name, flash, 0.0)
    path = folder / "summary.json"
    s = json.loads(path.read_text())
    s["metrics"] = metrics
    path.write_text(json.dumps(s))


@pytest.mark.parametrize(
    "bad", [{"gen/fid_evaluator": 9.0}, {"gen/acc": math.nan}, {"gen/acc": "0.99"},
            {"gen/acc": math.inf}],
    ids=["missing", "nan", "string", "inf"],
)  # fmt: skip
def test_select_never_picks_a_run_without_an_accuracy(tmp_path, bad):
    _with_metrics(tmp_path / "0", "unscored", 1000, bad)
    fake_run(tmp_path / "1", "scored", 3000, 0.40)
    rows = collect_runs([tmp_path])
    with pytest.warns(UserWarning, match=r"1 run\(s\) that fit ch32v003 have no evaluator acc"):
        assert select(rows, "ch32v003").name == "scored"
    alone = collect_runs([tmp_path / "0"])
    with pytest.raises(SelectError, match=r"1 run\(s\) fit ch32v003 but none has an evaluator"):
        select(alone, "ch32v003")


def test_an_infinite_fid_is_on_no_front(tmp_path):
    fake_run(tmp_path / "0", "inf-fid", 1000, 0.5, fid=math.inf)  # the smallest
    fake_run(tmp_path / "1", "finite", 3000, 0.9, fid=20.0)
    rows = collect_runs([tmp_path])
    mark_fronts(rows)
    by = {r.name: r for r in rows}
    assert not by["inf-fid"].front_fid and by["finite"].front_fid
    assert by["inf-fid"].front_acc  # its accuracy is a measurement: on that front


def test_select_and_export_count_the_same_ram(tmp_path):
    """One model too big for the Cortex-M0+ part: --select and the export's fit check print
    the same RAM figure (the streamed activations plus the part's RAM reserve)."""
    from tinycvae.data.dice import dice_spec
    from tinycvae.deploy.preflight import check_fit
    from tinycvae.mcu.footprint import load_mcu, summary_dict
    from tinycvae.mcu.stages import extract
    from tinycvae.models import build_cvae

    model = build_cvae(dice_spec(32), latent=1, latent_mode="bypass", dim1=4, dim2=96, dim3=4,
                       dim4=4)  # fmt: skip
    mcu = "cortex_m0plus_16k"
    fake_run(tmp_path / "0", "big", 1, 0.9)
    s = json.loads((tmp_path / "0" / "summary.json").read_text())
    s["footprint"] = summary_dict(model.decoder, 1, 6, [mcu])
    (tmp_path / "0" / "summary.json").write_text(json.dumps(s))
    with pytest.raises(SelectError) as picked:
        select(collect_runs([tmp_path]), mcu)
    with pytest.raises(ConfigError) as exported:
        check_fit(extract(model.decoder, 1, 6), load_mcu(mcu), mcu)
    ram = re.compile(r"(\d+) B RAM|RAM (\d+) B")
    figures = [next(g for g in ram.search(str(e.value)).groups() if g) for e in (picked, exported)]
    assert figures[0] == figures[1], (str(picked.value), str(exported.value))


def test_a_moved_run_folder_is_read_where_it_is(tmp_path):
    """The folder found on disk is the run: its own best.ckpt, not the summary's paths."""
    fake_run(tmp_path / "a", "moved", 1000, 0.9)
    (tmp_path / "a" / "checkpoints").mkdir()
    (tmp_path / "a" / "checkpoints" / "best.ckpt").write_bytes(b"x")
    (tmp_path / "a").rename(tmp_path / "b")
    (row,) = collect_runs([tmp_path / "b"])
    assert row.run_dir == str(tmp_path / "b")
    assert row.checkpoint == str(tmp_path / "b" / "checkpoints" / "best.ckpt")
