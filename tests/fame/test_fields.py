"""fame.fields: the checks every settings class and the config schema share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from fame.fields import SettingError, bounded, check_fields, derived, setting_fields, value_problem


@dataclass(frozen=True)
class Example:
    ratio: float | Literal["auto"] = field(default=0.5, metadata=bounded(0.0, 1.0))
    sizes: list[int] = field(default_factory=lambda: [1], metadata=bounded(1))
    pair: tuple[float, float] = field(default=(0.1, 0.2), metadata=bounded(0.0, lo_open=True))
    flag: bool = False
    name: str | None = None
    steps: int = field(default=0, metadata=derived(bounded(0)))

    def __post_init__(self):
        check_fields(self)


@pytest.mark.parametrize("changes, key, problem", [
    ({"ratio": 1.5}, "ratio", "1.5 is outside the allowed range [0.0, 1.0]"),
    ({"ratio": "half"}, "ratio", "got 'half', expected float or one of 'auto'"),
    ({"ratio": True}, "ratio", "got True, expected float or one of 'auto'"),
    ({"ratio": float("nan")}, "ratio", "got nan, expected float or one of 'auto'"),
    ({"sizes": [1, 0]}, "sizes[1]", "0 is outside the allowed range [1, inf]"),
    ({"pair": (0.0, 0.2)}, "pair[0]", "0.0 is outside the allowed range (0.0, inf]"),
    ({"pair": (0.1,)}, "pair", "got (0.1,), expected a list of float (length 2)"),
    ({"pair": [0.1, 0.2]}, "pair", "got [0.1, 0.2], expected a list of float (length 2)"),
    ({"flag": 1}, "flag", "got 1, expected bool"),
    ({"name": 3}, "name", "got 3, expected str or null"),
    ({"steps": 2.5}, "steps", "got 2.5, expected int"),
])
def test_a_broken_rule_names_the_field_and_the_problem(changes, key, problem):
    with pytest.raises(SettingError) as caught:
        Example(**changes)
    assert (caught.value.field, caught.value.problem) == (key, problem)
    assert str(caught.value) == f"Example.{key}: {problem}"


def test_fitting_values_pass_and_ints_count_as_floats():
    assert Example(ratio="auto", sizes=[3, 4], pair=(1, 2), flag=True, name="x").ratio == "auto"
    assert Example(ratio=1).ratio == 1
    assert value_problem(Optional[int], None) is None  # noqa: UP045 (the typing form older code writes)
    assert value_problem(int | None, None) is None


def test_derived_fields_are_no_settings():
    assert [f.name for f in setting_fields(Example)] == ["ratio", "sizes", "pair", "flag", "name"]
