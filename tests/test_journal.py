"""An Optuna journal cut mid-line (``truncate -s``: a full disk, a killed writer):
every complete record stays readable, one line says what was dropped, and nothing is
ever appended to a broken line (issue 20, item 2)."""

from __future__ import annotations

import json
import os

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from tinycvae.errors import ConfigError
from tinycvae.search.storage import open_storage

from conftest import TINY, run_train

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
STUDY = "dice_dims_pareto"
# conf/hparams_search/dice_optuna.yaml's space
CHOICES = {1: (2, 3, 4, 8, 16), 2: (2, 3, 4, 8, 16), 3: (2, 4, 8, 16, 32), 4: (2, 4, 8, 16, 32)}
DIMS = {f"model.dim{i}": CategoricalDistribution(c) for i, c in CHOICES.items()}


def finished_study(path, trials: int = 12) -> bytes:
    """A finished study on the search's own space and objectives; its journal's bytes."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(
        study_name=STUDY, storage=storage, directions=["minimize", "minimize"]
    )
    study.set_metric_names(["mcu/int8/flash_bytes", "val/loss"])
    for i in range(trials):
        dims = {f"model.dim{j}": c[(i + j) % 5] for j, c in CHOICES.items()}
        study.add_trial(
            optuna.create_trial(params=dims, distributions=DIMS, values=[1000 + i, 600 - i])
        )
    return path.read_bytes()


def cut_mid_record(path) -> int:
    """``truncate -s`` to the middle of the last record; the number of complete records."""
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    os.truncate(path, last + 20)
    return data[:last].count(b"\n")


def complete_trials(path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    return [t for t in study.trials if t.state == TrialState.COMPLETE]


def test_pareto_reads_every_complete_trial_of_a_cut_journal_and_leaves_it(tmp_path, capsys):
    from pareto import main as pareto_main

    journal = tmp_path / "study.journal"
    finished_study(journal)
    cut_mid_record(journal)
    before = journal.read_bytes()
    argv = ["--optuna-storage", str(journal), "--out", str(tmp_path / "front")]
    assert pareto_main([*argv, "--wandb-mode", "disabled"]) == 0
    (warning,) = [ln for ln in capsys.readouterr().err.splitlines() if "cut" in ln]
    assert warning.startswith(f"warning: --optuna-storage={journal}: the journal was cut")
    assert "dropped 1 broken line(s) (20 bytes: line" in warning
    rows = (tmp_path / "front" / "pareto.csv").read_text().splitlines()
    assert len(rows) == 1 + 11  # the last trial's state record was the one cut
    assert journal.read_bytes() == before  # a reader changes nothing


def test_a_search_on_a_cut_journal_repairs_it_before_appending(tmp_path):
    """The issue's command: ``truncate -s`` a finished study's journal, then the search
    on it. Before: a 30-line AttributeError, and the run appended to the cut line."""
    journal = tmp_path / "study.journal"
    finished_study(journal)
    kept = cut_mid_record(journal)
    cut = journal.read_bytes()
    args = [
        "-m", "hparams_search=dice_optuna", f"hydra.sweeper.storage={journal}",
        "hydra.sweeper.n_trials=12", "hydra.sweeper.n_jobs=1", "logger=none",
        "metrics=none", "objective=[mcu/int8/flash_bytes,val/loss]",
        "hydra.sweeper.direction=[minimize,minimize]", "hydra.sweeper.grace_period=1",
        *(o for o in TINY if not o.startswith("model.dim")),
    ]  # fmt: skip
    done = run_train(args, tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (warning,) = [ln for ln in done.stderr.splitlines() if "journal was cut" in ln]
    (side,) = tmp_path.glob("study.journal.dropped-*")
    assert warning.endswith(f"{kept} complete records kept (kept in {side})")
    assert side.read_bytes() == cut[cut.rfind(b"\n") + 1 :] + b"\n"  # nothing lost
    data = journal.read_bytes()
    assert data.startswith(cut[: cut.rfind(b"\n") + 1])  # every complete record, in place
    assert all(json.loads(line) for line in data.splitlines())  # nothing broken appended
    trials = complete_trials(journal)
    assert len(trials) == 12, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_journal_appended_to_after_its_cut_keeps_the_appended_records(tmp_path, capsys):
    """A journal that an older version appended to after the cut (the next run died on a
    JSONDecodeError): the record at the end of the broken line is recovered."""
    journal = tmp_path / "study.journal"
    finished_study(journal, trials=3)
    cut_mid_record(journal)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name=STUDY, storage=storage)
    with pytest.raises(AttributeError):  # Optuna on its own: appends to the cut line
        study.add_trial(optuna.create_trial(params={k: 2 for k in DIMS}, distributions=DIMS,
                                            values=[1, 1]))  # fmt: skip
    assert len(complete_trials(journal)) == 2  # Optuna alone loses the appended record
    opened = open_storage(str(journal), study_name=STUDY)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 recovered from the end of a broken line" in err
    values = [t.values for t in optuna.load_study(study_name=STUDY, storage=opened.optuna).trials]
    assert values[:2] == [[1000, 600], [1001, 599]] and values[-1] == [1, 1]


def test_a_file_that_is_no_journal_is_refused_and_left_alone(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b'my notes\n{"op_code": 0} half')
    with pytest.raises(ConfigError, match="is not an Optuna journal"):
        open_storage(str(notes), study_name="s")
    assert notes.read_bytes() == b'my notes\n{"op_code": 0} half'
