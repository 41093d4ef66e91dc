"""The search space: Hydra overrides (``hydra.sweeper.params`` and the command line) as
Optuna distributions and fixed overrides, and a trial's values back as Hydra overrides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import Trial

from tinycvae.errors import ConfigError


def search_space(
    params: dict[str, Any] | None, arguments: Sequence[str]
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """``hydra.sweeper.params`` plus the command line -> (distributions, fixed overrides).

    ``choice(...)`` -> categorical; ``range(a, b[, step])`` of integers -> an integer range
    (Hydra's stop is exclusive), of floats or shuffled -> categorical over its values;
    ``interval(a, b)`` -> a float range (``int(interval(a, b))``: integers),
    ``tag(log, interval(a, b))`` on a log scale. Anything else is a fixed override
    handed unchanged to every trial. A key given on the command line replaces the same
    key of ``params``."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as err:  # noqa: BLE001 - Hydra's OverrideParseException and friends
        raise ConfigError(
            f"hydra.sweeper.params: {str(err).splitlines()[0]}; allowed: Hydra overrides"
        ) from None
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    return space, list(fixed.values())


def sweeper_space(
    params: DictConfig | dict | None, arguments: Sequence[str]
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """``search_space`` of the sweeper's ``params`` as Hydra hands them over (a DictConfig
    or a dict); ConfigError when nothing is searched."""
    plain = OmegaConf.to_container(params) if OmegaConf.is_config(params) else None
    space, fixed = search_space(plain if plain is not None else params, arguments)
    if not space:
        raise ConfigError(
            "hydra.sweeper.params has nothing to search; allowed: key=choice(...), "
            "range(...) or interval(...)"
        )
    return space, fixed


def distribution(override: Override) -> BaseDistribution:
    if override.is_choice_sweep():
        return CategoricalDistribution(_values(override))
    if override.is_range_sweep():
        values = _values(override)
        value = override.value()
        if not values:
            raise ConfigError(f"{override.input_line}: an empty range; allowed: range(a, b)")
        if not value.shuffle and all(type(v) is int for v in values) and len(values) > 1:
            return IntDistribution(min(values), max(values), step=abs(int(value.step)))
        return CategoricalDistribution(values)
    if override.is_interval_sweep():
        value = override.value()
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(
        f"{override.input_line} cannot be searched; allowed: choice(...), range(...), "
        "interval(...), int(interval(...)), tag(log, interval(...))"
    )


def _values(override: Override) -> list[Any]:
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    for v in values:
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise ConfigError(
                f"{override.input_line}: {v!r} cannot be a choice; allowed: strings and numbers"
            )
    return values


def suggest(trial: Trial, name: str, dist: BaseDistribution) -> Any:
    """The trial's value for ``name`` (a retried trial keeps the value it had)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def trial_overrides(fixed: Sequence[str], params: dict[str, Any]) -> list[str]:
    """A trial's command line: the fixed overrides, then its drawn values."""
    return [*fixed, *(f"{k}={override_value(v)}" for k, v in params.items())]
