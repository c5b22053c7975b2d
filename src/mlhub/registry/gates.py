"""Promotion gates: conditions an alias demands of a model version, declared in a YAML file.

    # configs/registry.yaml
    aliases:                     # gates of every model
      production:
        - {metric: val_acc, op: ">=", value: 0.9}
        - {reproduced: true}
    models:                      # a model's own gates replace the shared ones of the same alias
      diabetes:
        production:
          - {metric: val_loss, op: "<=", value: 0.5}

A metric condition compares the final value of a metric of the version's run (see `RunFacts.final_metrics`).
`reproduced: true` holds when another finished run exists whose config snapshot has the same sha256 as the
version's run and whose final value of every compared metric (`metrics`, default every metric of the version's
run) is within `tolerance` (absolute, default 0: identical, as `mlhub reproduce` requires) of the version's
run's. See docs/registry.md.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from mlhub.eventlog import EventLog
from mlhub.events import RunStatus
from mlhub.events.base import EntityId, Key
from mlhub.registry.errors import GatesConfigError
from mlhub.registry.runs import RunFacts, read_run, runs_with_config, same_value

Op = Literal[">=", ">", "<=", "<", "==", "!="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}


class MetricCondition(BaseModel):
    """The final value of a metric of the version's run compared with a number, e.g. val_acc >= 0.9."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Key
    op: Op
    value: float = Field(allow_inf_nan=False)

    def describe(self) -> str:
        """The condition as one would write it."""
        return f"{self.metric} {self.op} {self.value:g}"


class ReproducedCondition(BaseModel):
    """Another finished run with the same config snapshot sha256 reached the same final metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reproduced: Literal[True]
    #: The metrics that must agree; None: every final metric of the version's run.
    metrics: tuple[Key, ...] | None = Field(default=None, min_length=1)
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    def describe(self) -> str:
        """The condition as one would write it."""
        which = ", ".join(self.metrics) if self.metrics else "every metric"
        return f"reproduced ({which} within {self.tolerance:g})"


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "reproduced" if "reproduced" in value else "metric"
    if isinstance(value, MetricCondition | ReproducedCondition):
        return "reproduced" if isinstance(value, ReproducedCondition) else "metric"
    return None


Condition = Annotated[
    Annotated[MetricCondition, Tag("metric")] | Annotated[ReproducedCondition, Tag("reproduced")],
    Discriminator(_condition_kind, custom_error_type="condition",
                  custom_error_message="a condition is a mapping with 'metric', 'op' and 'value', or 'reproduced'"),
]
AliasGates = dict[EntityId, list[Condition]]


class GatesConfig(BaseModel):
    """Every promotion gate: per alias for all models, and per model (which replaces the shared list)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aliases: AliasGates = Field(default_factory=dict)
    models: dict[EntityId, AliasGates] = Field(default_factory=dict)

    def conditions(self, model_name: str, alias: str) -> list[MetricCondition | ReproducedCondition]:
        """The conditions promoting to alias of model_name must meet (empty: no gate)."""
        own = self.models.get(model_name, {})
        return list(own[alias] if alias in own else self.aliases.get(alias, []))


def _format_loc(loc: tuple[str | int, ...]) -> str:
    """A pydantic error location as a field path, without the union tag pydantic puts after a list index."""
    out = ""
    previous: str | int | None = None
    for part in loc:
        if isinstance(previous, int) and part in ("metric", "reproduced") and out.endswith(f"[{previous}]"):
            previous = None  # the discriminator's tag, not a field (a field of the tag's name follows it)
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        previous = part
    return out


def parse_gates(data: Any, source: str = "gates") -> GatesConfig:
    """Validate loaded YAML as a GatesConfig; GatesConfigError names the source and each bad field path."""
    if data is None:
        data = {}
    try:
        return GatesConfig.model_validate(data)
    except ValidationError as e:
        problems = [f"{source}: {_format_loc(tuple(err['loc'])) or '(top level)'}: {err['msg']}"
                    for err in e.errors()]
        raise GatesConfigError("\n".join(problems)) from None


def load_gates(path: Path) -> GatesConfig:
    """Read and validate a gates file (YAML); GatesConfigError names the file and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise GatesConfigError(f"{path}: cannot read the promotion gates file: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise GatesConfigError(f"{path}: {where}invalid YAML ({getattr(e, 'problem', None) or e})") from None
    return parse_gates(data, str(path))


@dataclass(frozen=True)
class GateResult:
    """One evaluated condition: what it demands, whether it holds, and what was found."""

    condition: str
    passed: bool
    detail: str


async def evaluate(
    event_log: EventLog, conditions: list[MetricCondition | ReproducedCondition], run: RunFacts
) -> list[GateResult]:
    """Evaluate every condition on the version's run (facts read from the event log)."""
    results: list[GateResult] = []
    for condition in conditions:
        if isinstance(condition, MetricCondition):
            results.append(_metric(condition, run))
        else:
            results.append(await _reproduced(event_log, condition, run))
    return results


def _metric(c: MetricCondition, run: RunFacts) -> GateResult:
    actual = run.final_metrics.get(c.metric)
    if actual is None:
        return GateResult(c.describe(), False, f"run {run.run_id} has no metric {c.metric}")
    passed = not math.isnan(actual) and _OPS[c.op](actual, c.value)
    return GateResult(c.describe(), passed, f"{c.metric} of run {run.run_id} is {actual:g}")


async def _reproduced(event_log: EventLog, c: ReproducedCondition, run: RunFacts) -> GateResult:
    if run.config_sha256 is None:
        return GateResult(c.describe(), False, f"run {run.run_id} has no config snapshot to reproduce")
    keys = list(c.metrics) if c.metrics else sorted(run.final_metrics)
    missing = [k for k in keys if k not in run.final_metrics]
    if missing or not keys:
        return GateResult(c.describe(), False, f"run {run.run_id} has no metric {', '.join(missing) or 'at all'}")
    candidates = [r for r in await runs_with_config(event_log, run.config_sha256) if r != run.run_id]
    mismatches: list[str] = []
    for candidate_id in candidates:
        candidate = await read_run(event_log, candidate_id)
        if candidate.status != RunStatus.FINISHED:
            mismatches.append(f"run {candidate_id} is {candidate.status}")
            continue
        differ = [f"{k} {candidate.final_metrics[k]!r} vs {run.final_metrics[k]!r}" if k in candidate.final_metrics
                  else f"{k} missing" for k in keys
                  if k not in candidate.final_metrics
                  or not same_value(candidate.final_metrics[k], run.final_metrics[k], c.tolerance)]
        if not differ:
            return GateResult(c.describe(), True, f"run {candidate_id} reproduces run {run.run_id}")
        mismatches.append(f"run {candidate_id}: {', '.join(differ)}")
    if not candidates:
        return GateResult(c.describe(), False,
                          f"no other run has config sha256 {run.config_sha256[:12]} of run {run.run_id}")
    return GateResult(c.describe(), False, f"no run with the same config reproduces run {run.run_id} "
                                           f"({'; '.join(mismatches)})")
