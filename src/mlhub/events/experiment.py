"""Events of the experiment aggregate (subject mlhub.ev.experiment.<experiment_id>.*)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from mlhub.errors import ExperimentNameTaken
from mlhub.events.base import DomainEvent, EntityId, subject_token


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


def experiment_id_for(name: str) -> str:
    """The experiment id of a name: the name itself when it is a valid id, else its slug and a short hash."""
    return subject_token(name)


def experiment_to_create(name: str, existing: DomainEvent | None) -> ExperimentCreated | None:
    """The experiment.created to append for a name, or None when `existing` (the experiment's stored
    experiment.created, read by the caller) shows it exists; ExperimentNameTaken when that id belongs to an
    experiment of another name. The scheduler and the tracking service both create experiments through it
    (appending the event guarded to be the experiment's first)."""
    experiment_id = experiment_id_for(name)
    if existing is None:
        return ExperimentCreated(experiment_id=experiment_id, name=name)
    if isinstance(existing, ExperimentCreated) and existing.name != name:
        raise ExperimentNameTaken(
            f"experiment id {experiment_id!r} belongs to the experiment named {existing.name!r}, not {name!r}: "
            "choose another experiment name")
    return None


class ExperimentRenamed(ExperimentEvent):
    """An experiment was given a new name (its id stays: runs keep pointing at it)."""

    event_type: ClassVar[str] = "experiment.renamed"

    name: str = Field(min_length=1, max_length=200)


class ExperimentDeleted(ExperimentEvent):
    """An experiment was deleted (soft, as MLflow does: it and its runs can be restored)."""

    event_type: ClassVar[str] = "experiment.deleted"


class ExperimentRestored(ExperimentEvent):
    """A deleted experiment was restored."""

    event_type: ClassVar[str] = "experiment.restored"


class ExperimentTagsSet(ExperimentEvent):
    """Tags of an experiment were set (a later value of a key replaces an earlier one) or removed."""

    event_type: ClassVar[str] = "experiment.tags_set"

    tags: dict[str, Annotated[str, Field(max_length=8000)]] = Field(default_factory=dict)
    removed: tuple[Annotated[str, Field(min_length=1, max_length=250)], ...] = ()
