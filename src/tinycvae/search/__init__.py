"""Hyper-parameter search on Optuna, behind ``hydra/sweeper=optuna_study``: the search
space (``space``), the study on its storage (``study``), the ask-and-tell loop (``loop``),
where a study is stored (``storage``, ``journal``) and a study as Pareto rows (``trials``)."""
