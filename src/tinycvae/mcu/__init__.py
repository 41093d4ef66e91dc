"""The MCU cost model: the decoder as the stages the firmware runs
(:mod:`tinycvae.mcu.stages`) and the flash/RAM estimator that walks them
(:mod:`tinycvae.mcu.footprint`), with the MCU profiles of ``conf/mcu/``.

Training, the Pareto front and the Optuna search read it before anything is built; the
exporter (:mod:`tinycvae.deploy`) builds on it. It imports nothing of the exporter.
"""
