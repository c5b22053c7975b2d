"""The plugin protocol and the built-in example plugins (torch and lightning imported lazily).

A model type is a `Plugin` registered in the `mlhub.plugins` entry-point group; `load_plugin(name)` finds it.
Built-ins: `digits-mlp` (mlhub.plugins.digits) and `diabetes-regression` (mlhub.plugins.diabetes).
See docs/plugins.md.
"""

from mlhub.plugins.protocol import (
    ENTRY_POINT_GROUP,
    DataModuleSpec,
    DatasetVersion,
    Plugin,
    PluginConfigError,
    PluginLoadError,
    PluginNotFound,
    available_plugins,
    load_plugin,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "DataModuleSpec",
    "DatasetVersion",
    "Plugin",
    "PluginConfigError",
    "PluginLoadError",
    "PluginNotFound",
    "available_plugins",
    "load_plugin",
]
