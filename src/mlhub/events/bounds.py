"""Bounds on untrusted JSON and YAML values: how deep they nest, counted without recursion, and JSON text parsed
with that bound, so a body or token nested thousands deep is a ValueError naming the limit, never a
RecursionError (Python's json module recurses per level, and so do repr, json.dumps and pydantic afterwards).

Too many digits in an integer is already a ValueError of json.loads (Python's int max-str-digits limit, 4,300)."""

from __future__ import annotations

import json
from typing import Any

#: Deepest nesting of a request body or token the API reads (an MLflow body nests 3 levels, a page token 1;
#: experiment configs have their own limit, MLHUB_API_MAX_CONFIG_DEPTH, checked on the parsed value).
MAX_JSON_DEPTH = 64


class TooDeep(ValueError):
    """A value nests deeper than the limit (a ValueError, so callers that refuse malformed JSON refuse it too)."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} nests more than {limit} levels deep")
        self.limit = limit


def nesting_depth(data: Any, limit: int) -> int:
    """How deeply a JSON-like value nests (a scalar is 0), counted without recursion; stops past `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list | tuple):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth) for child in children)
    return deepest


def loads_bounded(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, what: str = "the JSON") -> Any:
    """json.loads that refuses (TooDeep, a ValueError) a document nesting deeper than max_depth; other malformed
    JSON (and integers of too many digits) raise json's own ValueError."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise TooDeep(what, max_depth) from None
    if nesting_depth(data, max_depth) > max_depth:
        raise TooDeep(what, max_depth)
    return data
