"""Events of the experiment aggregate (subject mlhub.ev.experiment.<experiment_id>.*)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from mlhub.events.base import DomainEvent, EntityId


class ExperimentEvent(DomainEvent):
    """Base of events about one experiment."""

    aggregate_type: ClassVar[str] = "experiment"
    aggregate_field: ClassVar[str] = "experiment_id"

    experiment_id: EntityId


class ExperimentCreated(ExperimentEvent):
    """An experiment (a named group of runs) was created."""

    event_type: ClassVar[str] = "experiment.created"

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    tags: dict[str, str] = Field(default_factory=dict)
