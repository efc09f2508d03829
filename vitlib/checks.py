"""The checks the validated configurations share. Used by the configs of chapters 1-3, 5 and 6.

:func:`same_names` keeps a registry of builders (stems, attentions) and the config's tuple of names
in step. The value checks each raise one ``ValueError`` that names the field and what it accepts; ``name`` is the field as
the reader writes it (``"ViTConfig.dim"``, ``"ScheduleConfig.max_lr"``, ``"steps_per_epoch"``).
``bool`` is refused where a number is asked for, although Python counts it as an ``int``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def positive_int(name: str, value: Any) -> None:
    """Raise unless ``value`` is an ``int`` > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def positive_number(name: str, value: Any, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is an ``int`` or ``float`` > 0 (>= 0 with ``allow_zero``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if not ok or not (value >= 0 if allow_zero else value > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number {bound}; got {value!r}")


def same_names(registry: str, builders: Iterable[str], config: str, names: Iterable[str], what: str) -> None:
    """Raise ``RuntimeError`` unless the registry ``registry`` (e.g. ``vitlib.stems.STEM_BUILDERS``)
    builds exactly the ``what`` (e.g. ``"stems"``) that ``config`` (e.g. ``vitlib.config.STEMS``)
    names: config validates names without importing torch, so it keeps its own tuple."""
    built, named = tuple(builders), tuple(names)
    if set(built) != set(named):
        raise RuntimeError(
            f"{config} {named} and {registry} {built} name different {what} "
            f"({sorted(set(named) ^ set(built))}): add or remove one in both"
        )
