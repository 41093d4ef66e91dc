"""tinycvae's SLURM launcher for Hydra 1.3 (``hydra/launcher=slurm``)."""
