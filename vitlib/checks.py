"""The checks the validated configurations share. Used by the configs of chapters 1-3, 5 and 6.

Each raises one ``ValueError`` that names the field and what it accepts; ``name`` is the field as
the reader writes it (``"ViTConfig.dim"``, ``"ScheduleConfig.max_lr"``, ``"steps_per_epoch"``).
``bool`` is refused where a number is asked for, although Python counts it as an ``int``.
"""

from __future__ import annotations

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
