"""The size/quality Pareto front over finished runs, and picking the run for a chip.

* :mod:`tinycvae.front.rows`: a run as a row (:class:`RunRow`, read from its
  ``summary.json`` record) and what its decoder needs on an MCU.
* :mod:`tinycvae.front.core`: the non-dominated set and the selection; no I/O.
* :mod:`tinycvae.front.summaries`: rows from run folders and from a W&B project (an
  Optuna study's rows are :mod:`tinycvae.search.trials`, which builds on this package).
* :mod:`tinycvae.front.outputs`: ``pareto.csv``, ``pareto.md``, ``pareto.png`` and the
  W&B table.

``src/pareto.py`` (:mod:`tinycvae.commands.pareto`) is the command that puts them together.

A run is on the front when no other run is at least as small (decoder flash at the
chosen precision) and at least as good (evaluator accuracy; separately, FID) and strictly
better in one of the two; a run without a finite figure (NaN, infinite, missing, not a
number) is on no front. Runs with identical coordinates are all on the front. Failed runs
are listed apart.
"""
