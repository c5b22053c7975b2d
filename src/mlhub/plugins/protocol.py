"""The plugin protocol: what a model type gives the worker, and how the worker finds it.

A plugin is a class registered as an entry point in the group `mlhub.plugins`; its entry-point name is the
`plugin:` of an experiment config. The worker calls, in order:

1. `validate_config(config)` (cheap, no torch) to refuse a bad config before anything is loaded;
2. `build_datamodule(config)`: the LightningDataModule and the `DatasetVersion` the run records;
3. `build_module(config)`: the LightningModule (after the worker has seeded everything from `config["seed"]`);
4. `lightning.Trainer(**config["trainer"]).fit(module, datamodule)`;
5. `evaluate(module, datamodule)`: final metrics on the fixed held-out split (optional hook);
6. `export_onnx(module, path)`: an ONNX file verified against torch (optional hook).

`config` is the resolved snapshot as a plain dict (`ExperimentConfig.model_dump(mode="json")` with the seed
filled in), never the scheduler's classes: a plugin imports nothing of mlhub but `mlhub.errors`. This module
imports neither torch nor lightning, so loading a plugin class is cheap.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

from mlhub.errors import InvalidInput

#: The entry-point group plugins register in.
ENTRY_POINT_GROUP = "mlhub.plugins"

logger = logging.getLogger(__name__)


class PluginNotFound(InvalidInput):
    """No plugin of that name is installed; the message lists those that are."""

    code = "PLUGIN_NOT_FOUND"


class PluginLoadError(InvalidInput):
    """A plugin's entry point is installed but does not load to a `Plugin` subclass."""

    code = "PLUGIN_LOAD_ERROR"


class PluginConfigError(InvalidInput):
    """A config holds a value the plugin cannot use; the message names the field (e.g. `model.lr`)."""

    code = "INVALID_PLUGIN_CONFIG"


@dataclass(frozen=True)
class DatasetVersion:
    """The exact data a run sees (what `run.dataset_version_recorded` records).

    fingerprint: sha256 hex over the data's canonical bytes and the parameters that split and shape it.
    size_bytes: the size of those canonical arrays; num_examples: the examples before splitting.
    """

    name: str
    fingerprint: str
    size_bytes: int
    num_examples: int


@dataclass(frozen=True)
class DataModuleSpec:
    """What `build_datamodule` gives: the LightningDataModule and the version of the data it serves."""

    datamodule: Any
    dataset_version: DatasetVersion


class Plugin(ABC):
    """A model type: builds the data, the LightningModule, final metrics and an ONNX export from a config.

    Subclasses set `name` (their entry-point name) and implement the two builders; the other methods are
    hooks with safe defaults (no validation beyond the builders', no final metrics, no export).
    """

    name: ClassVar[str]

    def validate_config(self, config: Mapping[str, Any]) -> None:  # noqa: B027 (a hook, no-op by default)
        """Raise PluginConfigError for a config this plugin cannot run; imports no torch."""

    @abstractmethod
    def build_datamodule(self, config: Mapping[str, Any]) -> DataModuleSpec:
        """The LightningDataModule for `config` and the `DatasetVersion` of its data."""

    @abstractmethod
    def build_module(self, config: Mapping[str, Any]) -> Any:
        """A fresh LightningModule for `config` (initialised from torch's global RNG, seeded by the caller)."""

    def evaluate(self, module: Any, datamodule: Any) -> dict[str, float]:
        """Deterministic final metrics on the fixed held-out split; none by default."""
        return {}

    def export_onnx(self, module: Any, path: Path) -> bool:
        """Write `module` as ONNX to `path`; True only when the file was verified against torch."""
        return False


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_plugins() -> list[str]:
    """The names of the installed plugins, sorted."""
    return sorted(_entry_points())


def load_plugin(name: str) -> Plugin:
    """An instance of the plugin registered as `name` in the `mlhub.plugins` entry-point group.

    Raises PluginNotFound (listing the installed plugins) for an unknown name, and PluginLoadError when
    the entry point does not load to a Plugin subclass.
    """
    found = _entry_points()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise PluginNotFound(
            f"plugin {name!r} is not installed; available plugins: {known} "
            f"(a plugin is an entry point in the {ENTRY_POINT_GROUP!r} group)"
        )
    entry = found[name]
    try:
        target = entry.load()
    except Exception as e:  # an import error inside a third-party plugin: report it with its entry point
        raise PluginLoadError(f"plugin {name!r} ({entry.value}) failed to load: {type(e).__name__}: {e}") from e
    if not (isinstance(target, type) and issubclass(target, Plugin)):
        raise PluginLoadError(f"plugin {name!r} ({entry.value}) is not a subclass of mlhub.plugins.Plugin")
    plugin = target()
    logger.debug("loaded plugin %s from %s", name, entry.value)
    return plugin
