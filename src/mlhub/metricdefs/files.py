"""The files metric definitions live in: `configs/metrics.yaml`, `migrations/metrics/NNNN_*.yaml` and the lock
`configs/metrics.lock.json`. Loading only: every problem is reported as `<file>: <field path>: <what is wrong>`.

metrics.yaml::

    metrics:
      val_acc:
        direction: max          # max or min: which way is better
        unit: fraction
        description: Share of validation examples classified correctly.
        min_value: 0            # the valid range (either end may be left out)
        max_value: 1

A metric name is any metric key a run may log (mlhub.events.keys: `val_acc`, `train/loss`, `val/acc@top1`); its
event subject token is `mlhub.events.metric_aggregate_id(name)`, never the name itself.

A migration file (`migrations/metrics/0001_val_acc_unit.yaml`; the file name without `.yaml` is its id)::

    metric: val_acc
    reason: Accuracy is reported as a fraction, no longer in percent.
    changes:
      unit: {from: percent, to: fraction}
      max_value: {from: 100, to: 1}
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from mlhub.events import Key, MetricSpec, key_problem
from mlhub.metricdefs.errors import MetricDefinitionError

#: The fields of a definition, in the order they are shown.
SPEC_FIELDS = ("direction", "unit", "description", "min_value", "max_value")
SpecField = Literal["direction", "unit", "description", "min_value", "max_value"]
#: `0001_val_acc_unit.yaml`: a number of four or more digits, then a short description.
MIGRATION_FILE = re.compile(r"^(\d{4,})_([A-Za-z0-9_-]+)\.ya?ml$")
LOCK_FORMAT = 1


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping after checking its keys are unique."""
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue
            if first is not key_node:
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       f"found key {key!r} a second time (first on line {first.start_mark.line + 1})",
                                       key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MetricDefinitionError(source, [("", f"cannot read the file: {getattr(e, 'strerror', None) or e}")]) from e
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # safe: a SafeLoader
    except yaml.YAMLError as e:
        if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
            mark = e.problem_mark
            problem = f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {e.problem}"
        else:
            problem = f"invalid YAML: {e}"
        raise MetricDefinitionError(source, [("", problem)]) from e


def _path(*parts: str | int) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _spec_problems(e: ValidationError, *prefix: str) -> list[tuple[str, str]]:
    problems = []
    for err in e.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown field; a definition has {', '.join(SPEC_FIELDS)}"
        elif err["type"] == "missing":
            message = "required field is missing"
        problems.append((_path(*prefix, *(str(p) for p in err["loc"])), message))
    return problems


def parse_spec(data: Any, source: str, *prefix: str) -> MetricSpec:
    """A definition from a loaded mapping (strict: "1" is not a number); MetricDefinitionError names the field."""
    if not isinstance(data, dict):
        raise MetricDefinitionError(source, [(_path(*prefix), f"must be a mapping of {', '.join(SPEC_FIELDS)}")])
    try:
        return MetricSpec.model_validate(data, strict=True)
    except ValidationError as e:
        raise MetricDefinitionError(source, _spec_problems(e, *prefix)) from e


def load_definitions(path: str | Path) -> dict[str, MetricSpec]:
    """The metrics declared in a definitions file (configs/metrics.yaml), by name, in file order."""
    path = Path(path)
    source = str(path)
    data = _read_yaml(path)
    if not isinstance(data, dict) or set(data) != {"metrics"} or not isinstance(data["metrics"], dict):
        raise MetricDefinitionError(source, [("", "must be a mapping with one key, `metrics`, that maps each metric "
                                                  "name to its definition")])
    specs: dict[str, MetricSpec] = {}
    problems: list[tuple[str, str]] = []
    for name, body in data["metrics"].items():
        problem = key_problem(name)
        if problem is not None:
            problems.append((_path("metrics", str(name)), f"a metric name is a metric key, and this one {problem}"))
            continue
        try:
            specs[name] = parse_spec(body, source, "metrics", name)
        except MetricDefinitionError as e:
            problems += e.problems
    if problems:
        raise MetricDefinitionError(source, problems)
    return specs


class _FieldChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    old: Any = Field(alias="from")
    new: Any = Field(alias="to")


class _MigrationFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Key
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    changes: dict[SpecField, _FieldChange] = Field(min_length=1)


@dataclass(frozen=True)
class Migration:
    """One metric migration file: its id (file name without .yaml), number, metric, reason and field changes."""

    id: str
    number: int
    metric: str
    reason: str
    #: field -> (old value, new value)
    changes: dict[str, tuple[Any, Any]]
    source: str


def load_migration(path: str | Path) -> Migration:
    """One migration file; MetricDefinitionError names the file and the field."""
    path = Path(path)
    source = str(path)
    match = MIGRATION_FILE.match(path.name)
    if match is None:
        raise MetricDefinitionError(source, [("", "a migration file is named NNNN_description.yaml "
                                                  "(e.g. 0001_val_acc_unit.yaml)")])
    data = _read_yaml(path)
    try:
        parsed = _MigrationFile.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            message = str(err["msg"])
            if err["type"] == "extra_forbidden":
                message = "unknown key; a migration has metric, reason and changes ({field: {from: ..., to: ...}})"
            elif err["type"] == "missing":
                message = "required key is missing"
            problems.append((_path(*(str(p) for p in err["loc"])), message))
        raise MetricDefinitionError(source, problems) from e
    problems = [(_path("changes", f), "from and to are equal: nothing changes")
                for f, c in parsed.changes.items() if c.old == c.new]
    if problems:
        raise MetricDefinitionError(source, problems)
    return Migration(id=path.name.rsplit(".", 1)[0], number=int(match.group(1)), metric=parsed.metric,
                     reason=parsed.reason, changes={f: (c.old, c.new) for f, c in parsed.changes.items()},
                     source=source)


def load_migrations(directory: str | Path | None) -> list[Migration]:
    """Every migration file (`*.yaml`, `*.yml`) of a folder in number order (none when there is no folder)."""
    if directory is None or not Path(directory).is_dir():
        return []
    paths = sorted(p for p in Path(directory).iterdir()
                   if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
    migrations: list[Migration] = []
    problems: list[str] = []
    for p in paths:
        try:
            migrations.append(load_migration(p))
        except MetricDefinitionError as e:
            problems.append(str(e))
    numbers: dict[int, str] = {}
    for m in migrations:
        if m.number in numbers:
            problems.append(f"{m.source}: number {m.number:04d} is used by {numbers[m.number]} too: "
                            f"each migration needs a number of its own")
        numbers.setdefault(m.number, m.source)
    if problems:
        raise MetricDefinitionError(str(directory), [("", p) for p in problems])
    return sorted(migrations, key=lambda m: m.number)


def read_lock(path: str | Path) -> dict[str, MetricSpec]:
    """The baseline definitions recorded in the lock (configs/metrics.lock.json); empty when there is none."""
    path = Path(path)
    if not path.exists():
        return {}
    source = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MetricDefinitionError(source, [("", f"cannot read the lock: {e}")]) from e
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT or not isinstance(data.get("baseline"), dict):
        raise MetricDefinitionError(source, [("", f'must be {{"format": {LOCK_FORMAT}, "baseline": {{...}}}}')])
    specs: dict[str, MetricSpec] = {}
    problems: list[tuple[str, str]] = []
    for name, body in data["baseline"].items():
        try:
            specs[name] = parse_spec(body, source, "baseline", name)
        except MetricDefinitionError as e:
            problems += e.problems
    if problems:
        raise MetricDefinitionError(source, problems)
    return specs


def write_lock(path: str | Path, baseline: dict[str, MetricSpec]) -> None:
    """Write the lock atomically (sorted, one definition a line block, stable for review diffs)."""
    path = Path(path)
    body = {"_comment": "First definition of every metric, written by `mlhub metrics lock`; never edit an entry: "
                        "change a definition with a migration under migrations/metrics/ (see docs/metrics.md).",
            "format": LOCK_FORMAT,
            "baseline": {name: spec.model_dump(mode="json") for name, spec in sorted(baseline.items())}}
    fd, tmp = tempfile.mkstemp(prefix=".metrics-lock-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(body, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
