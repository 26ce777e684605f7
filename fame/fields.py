"""Checked settings: a dataclass whose field types and ranges are its rules, stated once.

A settings class (``fame.FameConfig``, ``pipelines.params.AugParams``,
``data.spec.SyntheticSpec`` and the sections of ``engine.config``) gives each field a
type hint (bool, int, float, str, a ``Literal`` of choices, a fixed-length tuple, a list,
a union of these, another settings class) and, for numbers, the allowed interval in its
metadata (``bounded``; on a tuple or list it bounds every element). ``check_fields``
enforces them on an instance (a settings class calls it first in ``__post_init__``, then
checks the rules that tie fields together); ``engine.config`` reads the same hints and
metadata to convert YAML values and names a failing field by its dotted config key.
A field marked ``derived`` is set by code from other values, never read from a config.

Imports only the standard library: fame/ stays NumPy-only and loading a config stays light.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from numbers import Integral, Real
from typing import Any, Literal, Union

RANGE = "range"
DERIVED = "derived"
UNIONS = (Union, types.UnionType)

Bounds = tuple[float | None, float | None, bool]


class SettingError(ValueError):
    """A settings field whose value breaks its rule; ``field`` may end in an element index ("ks[0]")."""

    def __init__(self, owner: str, field: str, problem: str):
        super().__init__(f"{owner}.{field}: {problem}")
        self.owner, self.field, self.problem = owner, field, problem


def bounded(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    """Field metadata: the allowed interval [lo, hi] ((lo, hi] with lo_open); None: unbounded."""
    return {RANGE: (lo, hi, lo_open)}


def fraction(default: float) -> dataclasses.Field:
    """A field whose value lies in [0, 1]: a probability, a share or a fraction of something."""
    return dataclasses.field(default=default, metadata=bounded(0.0, 1.0))


def derived(metadata: dict | None = None) -> dict:
    """Field metadata (added to ``metadata``): set by code from other values, not a config key."""
    return {**(metadata or {}), DERIVED: True}


def setting_fields(cls) -> list[dataclasses.Field]:
    """The fields of a settings class (or instance) that a config may set: all but derived ones."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get(DERIVED, False)]


@functools.cache
def type_hints(cls) -> dict[str, Any]:
    """The resolved type hints of a settings class (cached: FameConfig is rebuilt every step)."""
    return typing.get_type_hints(cls)


def describe(tp) -> str:
    """A type hint in words, as error messages show it ("float or one of 'auto'")."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in UNIONS:
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {describe(args[0])}" + (f" (length {len(args)})" if origin is tuple else "")
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def range_problem(value: Any, bounds: Bounds | None) -> str | None:
    """Why a number lies outside ``bounds`` (see ``bounded``), or None when it is inside or not a number."""
    if bounds is None or isinstance(value, bool) or not isinstance(value, Real):
        return None
    lo, hi, lo_open = bounds
    if (lo is not None and (value < lo or (lo_open and value == lo))) or (hi is not None and value > hi):
        interval = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        return f"{value!r} is outside the allowed range {interval}"
    return None


def _is_instance(tp, value: Any) -> bool:
    """isinstance for a plain type hint; bool is no number, int counts as float, float is finite."""
    if tp is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if tp is float:
        return isinstance(value, Real) and math.isfinite(value)
    if tp is int:
        return isinstance(value, Integral)
    return isinstance(value, tp)


def _is_choice(value: Any, choices: tuple) -> bool:
    # `value in choices` would take 0 for False and 1.0 for True, so compare types too.
    return any(type(value) is type(choice) and value == choice for choice in choices)


def value_problem(tp, value: Any, bounds: Bounds | None = None) -> tuple[str, str] | None:
    """(element index suffix, why) when ``value`` does not fit type hint ``tp`` and ``bounds``;
    None when it fits. A union takes the first member whose type fits, then checks the range."""
    origin = typing.get_origin(tp)
    mismatch = ("", f"got {value!r}, expected {describe(tp)}")
    if origin in UNIONS:
        fitting = [arg for arg in typing.get_args(tp) if value_problem(arg, value) is None]
        return value_problem(fitting[0], value, bounds) if fitting else mismatch
    if origin is Literal:
        return None if _is_choice(value, typing.get_args(tp)) else mismatch
    if tp is type(None):
        return None if value is None else mismatch
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, origin) or (origin is tuple and len(value) != len(args)):
            return mismatch
        element_types = args if origin is tuple else args * len(value)
        for index, (arg, element) in enumerate(zip(element_types, value, strict=True)):
            problem = value_problem(arg, element, bounds)
            if problem is not None:
                return f"[{index}]{problem[0]}", problem[1]
        return None
    if not _is_instance(tp, value):
        return mismatch
    problem = range_problem(value, bounds)
    return None if problem is None else ("", problem)


def check_fields(settings) -> None:
    """Raise SettingError for the first field of ``settings`` that breaks its type hint or range."""
    hints = type_hints(type(settings))
    for f in dataclasses.fields(settings):
        problem = value_problem(hints[f.name], getattr(settings, f.name), f.metadata.get(RANGE))
        if problem is not None:
            raise SettingError(type(settings).__name__, f.name + problem[0], problem[1])
