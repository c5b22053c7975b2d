"""Events of metric definitions (subject mlhub.ev.metric.<name>.*): metric definitions are schema."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlhub.events.base import DomainEvent, subject_token
from mlhub.events.keys import Key


class MetricSpec(BaseModel):
    """What a metric means: which direction is better, its unit, and the range of valid values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    direction: Literal["max", "min"]
    unit: str = Field(default="", max_length=50)
    description: str = Field(default="", max_length=2000)
    min_value: float | None = None
    max_value: float | None = None

    @model_validator(mode="after")
    def _range_ordered(self) -> Self:
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError(f"min_value {self.min_value} is greater than max_value {self.max_value}")
        return self


class MetricDefinitionEvent(DomainEvent):
    """Base of events about one declared metric. Any valid metric key can be declared (`train/loss`,
    `val/acc@top1`): the aggregate id (the subject token) is `subject_token(name)`, the name itself when it is
    a plain id (so metrics declared before keys were free-form keep their subjects)."""

    aggregate_type: ClassVar[str] = "metric"
    aggregate_field: ClassVar[str] = "name"

    name: Key

    @property
    def aggregate_id(self) -> str:
        """The metric's subject token."""
        return metric_aggregate_id(self.name)


def metric_aggregate_id(name: str) -> str:
    """The aggregate id (subject token) of a declared metric's name."""
    return subject_token(name, fallback="metric")


class MetricDefined(MetricDefinitionEvent):
    """A metric was declared for the first time."""

    event_type: ClassVar[str] = "metric.defined"

    spec: MetricSpec


class MetricMigrated(MetricDefinitionEvent):
    """A declared metric's definition changed through a migration file (migrations/metrics/<id>)."""

    event_type: ClassVar[str] = "metric.migrated"

    migration_id: str = Field(min_length=1, max_length=200)
    previous: MetricSpec
    spec: MetricSpec
