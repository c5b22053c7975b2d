"""Events of the model aggregate (subject mlhub.ev.model.<model_name>.*): the model registry."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from mlhub.events.base import DomainEvent, EntityId, Sha256Hex


class ModelEvent(DomainEvent):
    """Base of events about one registered model (all its versions and aliases)."""

    aggregate_type: ClassVar[str] = "model"
    aggregate_field: ClassVar[str] = "model_name"

    model_name: EntityId


class ModelVersionRegistered(ModelEvent):
    """A new version of the model was registered from a run's artifact."""

    event_type: ClassVar[str] = "model.version_registered"

    version: int = Field(ge=1)
    run_id: EntityId
    artifact_path: str = Field(min_length=1, max_length=1000)
    artifact_sha256: Sha256Hex
    description: str = Field(default="", max_length=5000)
    registered_by: str | None = None


class ModelAliasSet(ModelEvent):
    """An alias (e.g. "production") now points to a version; previous_version is what it pointed to."""

    event_type: ClassVar[str] = "model.alias_set"

    alias: EntityId
    version: int = Field(ge=1)
    previous_version: int | None = None
    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)


class ModelAliasRemoved(ModelEvent):
    """An alias was removed from the model."""

    event_type: ClassVar[str] = "model.alias_removed"

    alias: EntityId
    previous_version: int = Field(ge=1)
    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)
