"""Reading the built-in plugins' parameters from a config snapshot, strictly and without torch.

Every problem is a PluginConfigError naming the field (`model.lr: ...`); unknown keys are refused with a
suggestion, so a typo never becomes a silently ignored setting.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mlhub.plugins.protocol import PluginConfigError

#: Keys of `model` every MLP of the built-ins understands.
MLP_KEYS = frozenset({"hidden_sizes", "dropout", "activation", "optimizer", "lr", "weight_decay", "momentum"})
#: Keys of `data.params` every built-in understands.
SPLIT_KEYS = frozenset({"val_fraction", "test_fraction", "batch_size"})
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")
OPTIMIZERS = ("adam", "adamw", "sgd")


class Section:
    """One free-form section of a config (`model`, `data.params`): typed getters that name the field."""

    def __init__(self, values: Any, where: str, known: Iterable[str]) -> None:
        if not isinstance(values, Mapping):
            raise PluginConfigError(f"{where}: must be a mapping, got {type(values).__name__}")
        self.values: Mapping[str, Any] = values
        self.where = where
        known = sorted(known)
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
                raise PluginConfigError(f"{where}.{key}: unknown key; {hint}")

    def _field(self, key: str) -> str:
        return f"{self.where}.{key}"

    def number(self, key: str, default: float, *, low: float, high: float | None = None,
               low_inclusive: bool = True, high_inclusive: bool = True) -> float:
        """A number (int or float, not bool) within [low, high] (bounds inclusive unless said otherwise)."""
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PluginConfigError(f"{self._field(key)}: must be a number, got {value!r}")
        too_low = value < low or (value == low and not low_inclusive)
        too_high = high is not None and (value > high or (value == high and not high_inclusive))
        if too_low or too_high:
            left, right = "[" if low_inclusive else "(", "]" if high_inclusive else ")"
            upper = "inf" if high is None else high
            raise PluginConfigError(f"{self._field(key)}: must be in {left}{low}, {upper}{right}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int, *, low: int = 1) -> int:
        """An integer (not bool) >= low."""
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PluginConfigError(f"{self._field(key)}: must be an integer >= {low}, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """true or false."""
        value = self.values.get(key, default)
        if not isinstance(value, bool):
            raise PluginConfigError(f"{self._field(key)}: must be true or false, got {value!r}")
        return value

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        """One of `choices`."""
        options = tuple(choices)
        value = self.values.get(key, default)
        if value not in options:
            raise PluginConfigError(f"{self._field(key)}: must be one of {', '.join(options)}, got {value!r}")
        return str(value)

    def fixed(self, key: str, expected: int | str) -> None:
        """A key that may be given but must equal what the data set dictates (e.g. input_size)."""
        if key in self.values and self.values[key] != expected:
            raise PluginConfigError(f"{self._field(key)}: this data set needs {expected!r}, "
                                    f"got {self.values[key]!r}")

    def sizes(self, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
        """A list of layer widths, each an integer >= 1 (an empty list means no hidden layer)."""
        value = self.values.get(key, list(default))
        if not isinstance(value, list | tuple) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                                      for v in value):
            raise PluginConfigError(f"{self._field(key)}: must be a list of integers >= 1, got {value!r}")
        return tuple(value)


@dataclass(frozen=True)
class MLPParams:
    """The network and optimizer settings shared by the built-in MLPs (`model` section)."""

    hidden_sizes: tuple[int, ...]
    dropout: float
    activation: str
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float

    @classmethod
    def read(cls, section: Section, *, hidden_sizes: tuple[int, ...], dropout: float, optimizer: str,
             lr: float) -> MLPParams:
        """Read from `section`, with the plugin's defaults for the keys it leaves out."""
        return cls(
            hidden_sizes=section.sizes("hidden_sizes", hidden_sizes),
            dropout=section.number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False),
            activation=section.choice("activation", "relu", ACTIVATIONS),
            optimizer=section.choice("optimizer", optimizer, OPTIMIZERS),
            lr=section.number("lr", lr, low=0.0, low_inclusive=False),
            weight_decay=section.number("weight_decay", 0.0, low=0.0),
            momentum=section.number("momentum", 0.0, low=0.0, high=1.0, high_inclusive=False),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists, not tuples), e.g. for a module's hyperparameters."""
        values = asdict(self)
        values["hidden_sizes"] = list(self.hidden_sizes)
        return values


@dataclass(frozen=True)
class SplitParams:
    """How the examples are split (train / val / fixed held-out test) and batched (`data` section)."""

    split_seed: int
    val_fraction: float
    test_fraction: float
    batch_size: int

    @classmethod
    def read(cls, config: Mapping[str, Any], section: Section, *, batch_size: int) -> SplitParams:
        """Read from `data.params` (`section`) and `data.split_seed` of `config`."""
        val = section.number("val_fraction", 0.2, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
        test = section.number("test_fraction", 0.2, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
        if val + test >= 0.9:
            raise PluginConfigError(f"{section.where}: val_fraction + test_fraction must leave at least 10% "
                                    f"of the examples to train on, got {val} + {test}")
        seed = data_section(config).get("split_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise PluginConfigError(f"data.split_seed: must be an integer in [0, 2**32), got {seed!r}")
        return cls(split_seed=seed, val_fraction=val, test_fraction=test,
                   batch_size=section.integer("batch_size", batch_size))


def data_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """config["data"], checked to be a mapping."""
    data = config.get("data")
    if not isinstance(data, Mapping):
        raise PluginConfigError(f"data: must be a mapping with name, params and split_seed, got {data!r}")
    return data


def data_name(config: Mapping[str, Any], expected: str) -> str:
    """data.name, which must be the one data set the plugin serves."""
    name = data_section(config).get("name")
    if name != expected:
        raise PluginConfigError(f"data.name: this plugin serves {expected!r}, got {name!r}")
    return expected


def run_seed(config: Mapping[str, Any]) -> int:
    """config["seed"]: the run's seed (the scheduler always records one in the snapshot)."""
    seed = config.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise PluginConfigError(f"seed: must be an integer in [0, 2**32) (the resolved snapshot carries one), "
                                f"got {seed!r}")
    return seed
