"""tinycvae's Optuna sweeper for Hydra 1.3 (``hydra/sweeper=optuna_study``)."""
