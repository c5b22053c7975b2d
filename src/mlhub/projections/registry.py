"""Which projectors `mlhub projector` runs: the SQL projector, the metric tables, and EXTRA_PROJECTORS."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from mlhub.analytics import MetricTableWriter, location_from_settings
from mlhub.projections.runtime import Projector
from mlhub.projections.sql_projector import SqlProjector
from mlhub.settings import Settings

#: Makes a projector from the settings and the (migrated, writer) read-model engine. No I/O in the factory.
ProjectorFactory = Callable[[Settings, Engine], Projector]

#: Projectors run next to the SQL projector, each with its own consumer, checkpoint and lock (e.g. the
#: metric-table projector). Append a factory here to have `mlhub projector` run it.
EXTRA_PROJECTORS: list[ProjectorFactory] = []


def build_projectors(settings: Settings, engine: Engine) -> list[Projector]:
    """Every projector `mlhub projector` runs: SQL read model, metric tables, then the extra ones in order."""
    metric_tables: Projector = MetricTableWriter(location_from_settings(settings))
    return [SqlProjector(engine), metric_tables, *(factory(settings, engine) for factory in EXTRA_PROJECTORS)]
