"""A job's evaluator and quality stage: the data set's evaluator, trained on first need
and cached, above its floor (:func:`prepare_evaluator`, also what ``src/evaluate.py``
scores with), then after training the sampler fitted on the best weights, the quality
metrics and the pictures (:func:`score_quality`). A failure there is a
:class:`~tinycvae.outcome.MetricsStageError`: the run keeps its checkpoints and records
it."""

from __future__ import annotations

import time

from tinycvae import devices
from tinycvae.errors import ConfigError
from tinycvae.evaluator import check_floor, load_or_train
from tinycvae.job import Job
from tinycvae.metrics import evaluate_quality
from tinycvae.outcome import MetricsStageError, describe
from tinycvae.resume import store_sampler
from tinycvae.sampling import fit_sampler


def prepare_evaluator(job: Job):
    """The data set's evaluator (trained on first need, then cached), above its floor, on
    the job's device together with the data."""
    if job.quality is None:
        return None
    dm = job.datamodule
    dm.prepare_data()
    devices.place(job.device, dm)
    record = load_or_train(
        dm.splits, dm.spec, dm.cache_key(), job.cfg.paths.data_dir, job.evaluator, progress=True
    )
    devices.place(job.device, record.evaluator)
    check_floor(record, job.evaluator.floor)
    if job.quality.features == "evaluator":
        if record.path is None:  # torch-fidelity loads its feature network from a file
            raise ConfigError("paths.data_dir=null: the evaluator needs a folder to live in")
        job.quality.weights_path = str(record.path)
    return record


def score_quality(job: Job, evaluator, best: str | None, loggers, summary) -> dict[str, float]:
    """Sampler fit, metrics and pictures on the best weights (already loaded by test)."""
    from tinycvae.pictures import make_pictures

    model, splits = job.module.model, job.datamodule.splits
    start = time.perf_counter()
    try:
        fit_sampler(model, splits.train)
        if best:
            store_sampler(best, model)
        metrics, _, _ = evaluate_quality(model, splits.test, evaluator.evaluator, job.quality)
        pictures = {}
        if job.cfg.metrics.get("pictures", True):
            pictures = make_pictures(
                model,
                splits.test,
                job.run_dir / "pictures",
                class_names=job.datamodule.spec.class_names,
                seed=job.quality.seed,
                sampler=model.sampler,
            )
    except Exception as err:  # noqa: BLE001 - keep the checkpoint, record the failure
        raise MetricsStageError(describe(err)) from err
    metrics["time/metrics_s"] = round(time.perf_counter() - start, 3)
    for lg in loggers:
        lg.log_metrics(metrics)
        if pictures and hasattr(lg, "log_image"):
            for name, image in pictures.items():
                lg.log_image(key=f"pictures/{name}", images=[image])
    summary.update(pictures={n: str(job.run_dir / "pictures" / f"{n}.png") for n in pictures})
    return metrics
