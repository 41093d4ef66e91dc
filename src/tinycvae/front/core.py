"""The non-dominated set and the selection of the run for a chip: pure functions of the
rows (no files, no network)."""

from __future__ import annotations

import math
import warnings

from tinycvae.errors import ConfigError, TinyCVAEError
from tinycvae.front.rows import RunRow, kernels_note, need


class SelectError(TinyCVAEError):
    """No run fits the chip."""


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def non_dominated(points: list[tuple[float, float]]) -> list[bool]:
    """``points`` are (cost to minimise, quality to maximise); True where no other point is
    at least as good in both and better in one. Points with a NaN or infinite coordinate
    are never on the front (an infinite FID is no measurement)."""
    out = []
    for i, (c, q) in enumerate(points):
        if not _finite(c, q):
            out.append(False)
            continue
        dominated = any(
            (c2 <= c and q2 >= q and (c2 < c or q2 > q))
            for j, (c2, q2) in enumerate(points)
            if j != i and _finite(c2, q2)
        )
        out.append(not dominated)
    return out


def mark_fronts(rows: list[RunRow]) -> None:
    """Mark the accuracy front over every finished run, and one FID front per feature
    network (FIDs in different evaluators' features are never compared)."""
    ok = [r for r in rows if r.status == "ok"]
    for r, on in zip(ok, non_dominated([(r.flash_bytes, r.acc) for r in ok])):
        r.front_acc = on
    networks = sorted({r.fid_network for r in ok if math.isfinite(r.fid)})
    if len(networks) > 1:
        warnings.warn(
            f"FIDs measured by {len(networks)} different evaluators ({', '.join(networks)}): "
            "each has its own FID front; they are never compared",
            stacklevel=2,
        )
    for network in networks:
        group = [r for r in ok if r.fid_network == network]
        for r, on in zip(group, non_dominated([(r.flash_bytes, -r.fid) for r in group])):
            r.front_fid = on


def _scored(fitting: list[RunRow], mcu: str) -> list[RunRow]:
    """The fitting runs with an evaluator accuracy to rank them by (a finite number in
    [0, 1]); one warning for those without, SelectError when none has one."""
    scored = [r for r in fitting if math.isfinite(r.acc) and 0.0 <= r.acc <= 1.0]
    unscored = [r for r in fitting if r not in scored]
    if unscored and not scored:
        raise SelectError(
            f"{len(fitting)} run(s) fit {mcu} but none has an evaluator accuracy (gen/acc is "
            f"missing, NaN or not a number in {unscored[0].run_dir}); allowed: runs trained "
            "with metrics enabled (metrics=default), or export one by name: run=<run folder>"
        )
    if unscored:
        warnings.warn(
            f"{len(unscored)} run(s) that fit {mcu} have no evaluator accuracy (gen/acc "
            f"missing, NaN or not a number, e.g. {unscored[0].run_dir}); not selected",
            stacklevel=3,
        )
    return scored


def select(rows: list[RunRow], mcu: str) -> RunRow:
    """The best finished run whose decoder fits ``mcu``: highest accuracy, then lowest
    FID, then smallest flash; a run without a finite accuracy is never selected.
    SelectError (naming the smallest run and how far it is over budget) when none fits."""
    ok = [r for r in rows if r.status == "ok"]
    if ok and all(mcu not in r.fits for r in ok):
        raise ConfigError(f"no run has a footprint estimate for mcu={mcu}")
    fitting = [r for r in ok if r.fits.get(mcu)]
    if not fitting:
        if not ok:
            raise SelectError("no finished run to select from")
        smallest = min(ok, key=lambda r: (r.flash_bytes, r.ram_bytes))
        over, needs = smallest.over.get(mcu, {}), need(smallest, mcu)
        raise SelectError(
            f"no run fits {mcu}: the smallest, {smallest.name} ({smallest.run_dir}), needs "
            f"{needs['flash_bytes']:.0f} B flash ({over.get('flash_bytes', 0)} B over) and "
            f"{needs['ram_bytes']:.0f} B RAM ({over.get('ram_bytes', 0)} B over)"
            f"{kernels_note(smallest, mcu)}"
        )

    def key(r: RunRow):
        fid = r.fid if math.isfinite(r.fid) else math.inf
        return (-r.acc, fid, r.flash_bytes)

    return min(_scored(fitting, mcu), key=key)
