"""The one validation of tracking keys and values, shared by every producer (SDK, Lightning logger, REST, worker).

Keys (metric, param and tag names) are payload, never NATS subject tokens, so nothing about subjects limits
them. Accepted: any Unicode letter or digit (with its combining marks), `_ - . / : space`, and the punctuation
people put in metric names, `@ # ( ) [ ] , = + %`; 1 to 250 characters; not blank; no leading `/` and no `..`
path segment (keys name files in exports). Control characters are refused with everything else.

Values: metric values are floats (ints are floats too); NaN and the infinities are kept (on the wire they are
the strings "NaN", "Infinity", "-Infinity"). Bools and numeric strings are refused, never converted.
Steps and epochs are 0..2**63-1; timestamps (ms since the Unix epoch) lie within the years 1 to 9999.

`check_key`, `metric_value`, `check_step` and `check_timestamp` raise `InvalidMetric` naming the problem; the
pydantic types below (`Key`, `MetricValue`, `Step`, `TimestampMs`) run the same checks inside event models
and request schemas.
"""

from __future__ import annotations

import math
import operator
import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict

from mlhub.errors import InvalidMetric

MAX_KEY_LENGTH = 250
MAX_COUNT = 2**63 - 1
#: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in milliseconds since the Unix epoch.
MIN_TIMESTAMP_MS = -62_135_596_800_000
MAX_TIMESTAMP_MS = 253_402_300_799_999
#: The punctuation accepted besides letters and digits (the space included).
KEY_PUNCTUATION = "_-./: @#()[],=+%"
_KEY = re.compile(r"[^\W_]|[" + re.escape(KEY_PUNCTUATION) + "]")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: Keys of the system metrics a run's producer samples by itself (mlhub.client.system): CPU, memory, GPU. Their
#: step is the sample's wall-clock time in ms, not a training step, so readers of "the run's last step" skip them.
SYSTEM_METRIC_PREFIX = "system/"


def key_problem(key: object) -> str | None:
    """Why a key cannot be used (a sentence), or None when it can."""
    if not isinstance(key, str):
        return f"must be a string, got {type(key).__name__}"
    if not key or not key.strip():
        return "must not be empty or blank"
    if len(key) > MAX_KEY_LENGTH:
        return f"is {len(key)} characters long; {MAX_KEY_LENGTH} at most"
    for index, char in enumerate(key):
        # Combining marks count with the letter they follow (a decomposed "é" is "e" + U+0301).
        if not _KEY.fullmatch(char) and not (index and unicodedata.category(char).startswith("M")):
            shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
            return (f"has {shown} at position {index}: keys take letters, digits, spaces and "
                    f"{KEY_PUNCTUATION.replace(' ', '')}")
    if key.startswith("/"):
        return "must not start with '/'"
    if ".." in key.split("/"):
        return "must not have a '..' path segment"
    return None


def check_key(key: object, what: str = "metric") -> str:
    """The key itself when it is valid; InvalidMetric naming the key and the problem otherwise."""
    problem = key_problem(key)
    if problem is not None:
        raise InvalidMetric(f"{what} key {key!r} {problem}")
    assert isinstance(key, str)
    return key


def metric_value(value: Any, key: str = "") -> float:
    """A metric value as a float: an int or float (a 0-d tensor or numpy scalar through `.item()`), or one of
    the strings "NaN", "Infinity", "-Infinity". Bools, other strings and other types raise InvalidMetric."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (TypeError, ValueError) as e:  # a tensor with more than one element
            raise InvalidMetric(f"metric {key!r}: value is not a single number ({e})") from None
    if isinstance(value, bool):
        raise InvalidMetric(f"metric {key!r}: value {value!r} is a bool, not a number (log 1.0 or 0.0)")
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise InvalidMetric(f"metric {key!r}: value {value} is too large for a float") from None
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    raise InvalidMetric(f"metric {key!r}: value {value!r} ({type(value).__name__}) is not a number")


def _as_int(value: Any) -> int | None:
    """An int (numpy integers through __index__); None for bools and anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return None


def _count(name: str, value: Any) -> int:
    number = _as_int(value)
    if number is None or not 0 <= number <= MAX_COUNT:
        raise InvalidMetric(f"{name} must be an integer from 0 to 2**63-1, got {value!r}")
    return number


def check_step(value: Any, name: str = "step") -> int:
    """A step or epoch: an integer from 0 to 2**63-1; InvalidMetric otherwise."""
    return _count(name, value)


def check_timestamp(value: Any, name: str = "timestamp") -> int:
    """A timestamp in ms since the Unix epoch within the years 1 to 9999; InvalidMetric otherwise."""
    number = _as_int(value)
    if number is None or not MIN_TIMESTAMP_MS <= number <= MAX_TIMESTAMP_MS:
        raise InvalidMetric(f"{name} must be milliseconds since the Unix epoch within the years 1 to 9999 "
                            f"({MIN_TIMESTAMP_MS} to {MAX_TIMESTAMP_MS}), got {value!r}")
    return number


def _key_validator(value: str) -> str:
    problem = key_problem(value)
    if problem is not None:
        raise ValueError(f"key {value!r} {problem}")
    return value


#: A metric, param or tag key (see the module docstring).
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH), AfterValidator(_key_validator)]
#: A metric value in a request or event: a number, or "NaN" / "Infinity" / "-Infinity" (strict: no bools, no
#: numeric strings). The strings are turned into floats by the models that hold these (see `as_floats`).
MetricValue = Annotated[float, Strict()] | Literal["NaN", "Infinity", "-Infinity"]
#: A step or epoch.
Step = Annotated[int, Strict(), Field(ge=0, le=MAX_COUNT)]
#: A point's timestamp: ms since the Unix epoch, years 1 to 9999.
TimestampMs = Annotated[int, Strict(), Field(ge=MIN_TIMESTAMP_MS, le=MAX_TIMESTAMP_MS)]


def as_floats(values: tuple[float | str, ...]) -> tuple[float, ...]:
    """Values validated as MetricValue with the non-finite strings turned into floats."""
    if str in set(map(type, values)):  # (a C-level pass: the values of a big batch are checked on every decode)
        return tuple(_NON_FINITE[v] if isinstance(v, str) else v for v in values)
    return values  # type: ignore[return-value]  # no strings: floats only


__all__ = [
    "KEY_PUNCTUATION",
    "MAX_COUNT",
    "MAX_KEY_LENGTH",
    "MAX_TIMESTAMP_MS",
    "MIN_TIMESTAMP_MS",
    "Key",
    "MetricValue",
    "Step",
    "TimestampMs",
    "as_floats",
    "check_key",
    "check_step",
    "check_timestamp",
    "key_problem",
    "metric_value",
]
