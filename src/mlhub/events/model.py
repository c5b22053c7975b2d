"""Events of the model aggregate (subject mlhub.ev.model.<model_name>.*): the model registry."""

from __future__ import annotations

from typing import Annotated, ClassVar

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


class ModelCreated(ModelEvent):
    """A registered model was created before its first version (MLflow's create_registered_model)."""

    event_type: ClassVar[str] = "model.created"

    description: str = Field(default="", max_length=5000)
    tags: dict[str, Annotated[str, Field(max_length=5000)]] = Field(default_factory=dict)


class ModelUpdated(ModelEvent):
    """The description or tags of a model (version None) or of one of its versions changed: `description`
    replaces the old one when given; `tags` are set, `removed` tag keys are dropped."""

    event_type: ClassVar[str] = "model.updated"

    version: int | None = Field(default=None, ge=1)
    description: str | None = Field(default=None, max_length=5000)
    tags: dict[str, Annotated[str, Field(max_length=5000)]] = Field(default_factory=dict)
    removed: tuple[Annotated[str, Field(min_length=1, max_length=250)], ...] = ()


class ModelVersionDeleted(ModelEvent):
    """A version of the model was deleted (its aliases go with it; its number is never reused)."""

    event_type: ClassVar[str] = "model.version_deleted"

    version: int = Field(ge=1)
    actor: str = Field(min_length=1, max_length=200)


class ModelDeleted(ModelEvent):
    """The registered model was deleted with its versions and aliases; the name may be registered again."""

    event_type: ClassVar[str] = "model.deleted"

    actor: str = Field(min_length=1, max_length=200)
