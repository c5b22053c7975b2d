"""`text_cell`: the one text form of a value in the CLI's text output, its JSON and never a Python repr."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from mlhub.analytics.cells import text_cell


@pytest.mark.parametrize(("value", "text"), [
    (True, "true"), (False, "false"), (None, "null"), (3, "3"), (0.1, "0.1"), (1e-05, "1e-05"),
    (math.nan, "NaN"), (-math.inf, "-Infinity"), ([1, "a", None, (2, 3)], '[1, "a", null, [2, 3]]'),
    ({"k": False, 1: 2.5}, '{"k": false, "1": 2.5}'), ("plain text", "plain text"), ("é", "é"),
    ("true", '"true"'), ("null", '"null"'), ("1.5", '"1.5"'), ("-2", '"-2"'), ("NaN", '"NaN"'), ("", '""'),
    (" padded", '" padded"'), ('"quoted', '"\\"quoted"'), (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                                                           "2026-01-02T03:04:05+00:00"),
])
def test_values_print_as_their_json(value: object, text: str) -> None:
    assert text_cell(value) == text


def test_a_field_that_is_text_by_type_prints_its_strings_as_they_are() -> None:
    assert text_cell("true", quote=False) == "true" and text_cell("", quote=False) == ""
    assert text_cell(None, none="NULL") == "NULL" and text_cell(True, quote=False) == "true"
