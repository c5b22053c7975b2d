"""The plugin tests' fixture: training shared through a session cache keyed by (plugin, seed), so each
distinct run happens once."""

from __future__ import annotations

from typing import Any

import pytest
from tests.plugins.helpers import TrainedRun, train

_RUNS: dict[tuple[str, int | None], TrainedRun] = {}


@pytest.fixture(scope="session")
def trained() -> Any:
    """trained(plugin, seed=None): the run for (plugin, seed), trained once per session."""

    def get(plugin_name: str, seed: int | None = None) -> TrainedRun:
        key = (plugin_name, seed)
        if key not in _RUNS:
            _RUNS[key] = train(plugin_name, seed)
        return _RUNS[key]

    return get
