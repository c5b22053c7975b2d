"""YAML as experiment configs need it: safe loading, duplicate keys refused, YAML 1.2 floats, JSON values only.

PyYAML alone has three traps for configs: a key given twice silently keeps the last value; `1e-3` (no dot) is
read as the *string* "1e-3" (YAML 1.1), so a learning rate in a free-form section would reach the plugin as
text; and dates, sets, binary and `.nan` load fine but have no canonical JSON form, so the config could not be
hashed. The loader here refuses the first, reads the second as a float, and `non_json_values` names the third.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

#: YAML 1.2's float forms, which include exponents without a dot (`1e-3`), plus the YAML 1.1 ones.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_MERGE_TAG = "tag:yaml.org,2002:merge"
#: Largest integer a config may hold, in bits: its decimal form stays within Python's 4,300-digit str limit.
_MAX_INT_BITS = 14_000


class ConfigLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping and reads `1e-3` as a float."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping, first checking its own keys (merged `<<` keys may be overridden) are unique."""
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeConstructor reports it below
                continue
            if first is not key_node:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found key {key!r} a second time (first on line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class YAMLTooComplex(yaml.YAMLError):
    """A document PyYAML cannot build safely: nested so deep that its recursive composer overflows the stack, or
    an integer with more digits than Python converts (sys.get_int_max_str_digits, 4,300)."""


def load_yaml(text: str) -> Any:
    """Parse one YAML document with the config loader (raises yaml.YAMLError with a position, or
    YAMLTooComplex naming the problem)."""
    try:
        return yaml.load(text, Loader=ConfigLoader)  # safe: ConfigLoader is a SafeLoader
    except RecursionError:
        raise YAMLTooComplex("it nests too deeply to be read (an experiment config nests at most "
                             "MLHUB_API_MAX_CONFIG_DEPTH levels)") from None
    except ValueError as e:  # int("9" * 5000): past Python's integer digit limit (or another unconvertible scalar)
        raise YAMLTooComplex(f"a value cannot be converted: {str(e).split(';')[0]}") from None


def format_path(path: tuple[str | int, ...]) -> str:
    """A field path as users write it: `trainer.max_epochs`, `model.layers[1]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def non_json_values(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str, str]]:
    """(path, problem) for every value in a loaded document that has no canonical JSON form."""
    if value is None or isinstance(value, bool | str):
        return []
    if isinstance(value, int):  # YAML's 0x/0o/0b forms have no digit limit; the JSON of such a number has one
        return [] if value.bit_length() <= _MAX_INT_BITS else [
            (format_path(path), f"an integer of {value.bit_length()} bits is too large for a config value")]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(format_path(path), f"{value} is not a finite number")]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in non_json_values(item, (*path, i))]
    if isinstance(value, dict):
        problems: list[tuple[str, str]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append((format_path(path), f"key {key!r} must be a string (quote it)"))
                continue
            problems += non_json_values(item, (*path, key))
        return problems
    kind = type(value).__name__
    return [(format_path(path), f"a {kind} ({value!r}) is not a JSON value: quote it to keep it as text")]
