"""Hyper-parameter search on Optuna: the sweeper behind ``hydra/sweeper=optuna_study``
(``sweeper``), where a study is stored (``storage``) and a study as Pareto rows (``front``)."""
