"""Experiment configs: the schema, loading from YAML files under `configs/`, and `--set` overrides.

A config is validated strictly (unknown keys refused, no silent type coercion such as "5" -> 5) and every
default is filled in, so `config.model_dump(mode="json")` is the fully resolved snapshot a run records.
Every problem is reported as `<file>: <field path>: <what is wrong>`; a bad config queues nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mlhub.events.bounds import nesting_depth
from mlhub.events.keys import Key
from mlhub.scheduler.errors import ConfigError
from mlhub.scheduler.yamlio import YAMLTooComplex, format_path, load_yaml, non_json_values

#: A seed: what numpy, torch and Python's random all accept.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
#: Free-form parameters handed to the plugin as they are (JSON values only).
Params = dict[str, Any]
#: Lightning's precision names.
Precision = Literal["64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"]
#: Lightning's legacy precision spellings and the names they stand for (Lightning maps them the same way).
_PRECISION_ALIASES: dict[object, str] = {
    64: "64-true", "64": "64-true", 32: "32-true", "32": "32-true", 16: "16-mixed", "16": "16-mixed",
    "bf16": "bf16-mixed",
}


def _precision_alias(value: object) -> object:
    if isinstance(value, int | str) and not isinstance(value, bool):
        return _PRECISION_ALIASES.get(value, value)
    return value


def _batch_limit(value: object) -> int | float:
    """Lightning's limit_*_batches: a number of batches (int >= 1) or a fraction of them (float in (0, 1])."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, float) and 0 < value <= 1:
        return value
    raise ValueError(f"must be a number of batches (an integer >= 1) or a fraction (a float in (0, 1]), got {value!r}")


BatchLimit = Annotated[int | float, PlainValidator(_batch_limit)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(_Section):
    """The data set: its name (resolved by the plugin), its parameters and the seed of its train/val split."""

    name: str = Field(min_length=1, max_length=250)
    params: Params = Field(default_factory=dict)
    split_seed: Seed = 0


class TrainerConfig(_Section):
    """The Lightning Trainer's settings a run may choose (the worker passes them to `lightning.Trainer`)."""

    max_epochs: int = Field(default=10, gt=0)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(default=1, ge=1)
    precision: Annotated[Precision, BeforeValidator(_precision_alias)] = "32-true"
    deterministic: bool = True
    limit_train_batches: BatchLimit | None = None
    limit_val_batches: BatchLimit | None = None
    gradient_clip_val: float | None = Field(default=None, ge=0)
    accumulate_grad_batches: int = Field(default=1, ge=1)
    check_val_every_n_epoch: int = Field(default=1, ge=1)
    log_every_n_steps: int = Field(default=50, ge=1)


class ExperimentConfig(_Section):
    """One experiment config: what to train (plugin, model, data), how (trainer), where (pool) and its seed.

    `seed` may be left out: the scheduler then draws one and records it, so the run stays reproducible.
    """

    experiment: str = Field(min_length=1, max_length=200, pattern=r"\S")
    plugin: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: Params = Field(default_factory=dict)
    data: DataConfig
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    seed: Seed | None = None
    pool: Literal["cpu", "gpu"] = Field(default="cpu", validate_default=True)
    timeout_s: float | None = Field(default=3600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=100)
    tags: dict[Key, Annotated[str, Field(max_length=5000)]] = Field(default_factory=dict)

    @field_validator("pool")
    @classmethod
    def _gpu_runs_need_the_gpu_pool(cls, pool: str, info: ValidationInfo) -> str:
        trainer = info.data.get("trainer")
        if isinstance(trainer, TrainerConfig) and trainer.accelerator == "gpu" and pool != "gpu":
            raise ValueError("trainer.accelerator is 'gpu', so pool must be 'gpu' (cpu workers have no GPU)")
        return pool


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config, the file it came from, and the overrides applied to it (as given)."""

    config: ExperimentConfig
    source: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Override:
    """One `--set key.path=value` (or `+key.path=value`, which may add a key to a free-form section)."""

    text: str
    path: tuple[str, ...]
    value: Any
    add: bool = False


def parse_override(text: str, source: str = "--set") -> Override:
    """Parse `key.path=value`; the value is read as YAML (`3` an int, `1e-3` a float, `null`, `[1, 2]`)."""
    add = text.startswith("+")
    key, sep, raw = text.removeprefix("+").partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not all(path):
        raise ConfigError(source, [("", f"override {text!r} must look like key.path=value")])
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        shown = text if len(text) <= 100 else f"{text[:60]}...({len(text)} characters)"
        why = "cannot be read" if isinstance(e, YAMLTooComplex) else "is not valid YAML"
        raise ConfigError(source, [(".".join(path), f"the value of {shown!r} {why}: {e}")]) from e
    return Override(text=text, path=path, value=value, add=add)


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override]) -> list[tuple[str, str]]:
    """Apply overrides to a loaded document in place; (path, problem) for each that names an unknown key.

    A key must be a field of the schema or already be in the file; `+key.path=value` may add the last key
    to a free-form section (model, data.params, tags), as Hydra's `+` does.
    """
    problems: list[tuple[str, str]] = []
    for override in overrides:
        node: dict[str, Any] = data
        schema: type[BaseModel] | None = ExperimentConfig
        for depth, key in enumerate(override.path):
            last = depth == len(override.path) - 1
            where = ".".join(override.path[: depth + 1])
            known = list(schema.model_fields) if schema is not None else list(node)
            if key not in known and not (last and override.add and schema is None):
                message = _unknown_key(key, known, f"(--set {override.text})")
                if last and schema is None:
                    message += f"; to add a key here, write --set +{override.text.removeprefix('+')}"
                problems.append((where, message))
                break
            if last:
                node[key] = override.value
                break
            child = node.setdefault(key, {}) if schema is not None else node[key]
            if child is None and schema is not None:
                child = node[key] = {}
            if not isinstance(child, dict):
                problems.append((where, f"is not a mapping, so {override.text!r} cannot set a key inside it"))
                break
            node = child
            schema = _section_class(schema, key)
    return problems


def _section_class(schema: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    """The model class of a field when it is a section of the schema; None for free-form ones."""
    if schema is None:
        return None
    annotation = schema.model_fields[key].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unknown_key(key: str, known: list[str], context: str = "") -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else (f"; known: {', '.join(known)}" if known else "")
    return f"unknown key{' ' + context if context else ''}{hint}"


#: Default limits of a config (the API's are settings: MLHUB_API_MAX_CONFIG_BYTES / MLHUB_API_MAX_CONFIG_DEPTH).
MAX_CONFIG_BYTES = 256 * 1024
MAX_CONFIG_DEPTH = 32


def check_config_limits(data: Any, source: str, *, max_bytes: int = MAX_CONFIG_BYTES,
                        max_depth: int = MAX_CONFIG_DEPTH) -> None:
    """ConfigTooLarge when a config nests deeper than max_depth or its JSON is over max_bytes (checked before
    anything recursive sees it)."""
    import json

    from mlhub.scheduler.errors import ConfigTooLarge

    depth = nesting_depth(data, max_depth)
    if depth > max_depth:
        raise ConfigTooLarge(f"{source}: the config nests more than {max_depth} levels deep "
                             "(MLHUB_API_MAX_CONFIG_DEPTH)", limit="MLHUB_API_MAX_CONFIG_DEPTH", maximum=max_depth,
                             value=depth)
    try:
        size = len(json.dumps(data, default=str, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        return  # not JSON: validate_config names the value
    if size > max_bytes:
        raise ConfigTooLarge(f"{source}: the config is {size} bytes as JSON; a job's config may be {max_bytes} "
                             "(MLHUB_API_MAX_CONFIG_BYTES)", limit="MLHUB_API_MAX_CONFIG_BYTES", maximum=max_bytes,
                             value=size)


def validate_config(data: Any, source: str, overrides: Sequence[Override] = (), *, max_bytes: int = MAX_CONFIG_BYTES,
                    max_depth: int = MAX_CONFIG_DEPTH) -> ExperimentConfig:
    """Validate a loaded document (overrides already applied); ConfigError names the file and field paths,
    ConfigTooLarge a config over the size or nesting limit."""
    if not isinstance(data, dict):
        kind = "nothing (the file is empty)" if data is None else f"a {type(data).__name__}"
        raise ConfigError(source, [("", f"a config must be a mapping of keys (experiment, plugin, ...), got {kind}")])
    check_config_limits(data, source, max_bytes=max_bytes, max_depth=max_depth)
    problems = non_json_values(data)
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        reported = {path for path, _ in problems}
        problems += [p for p in (_describe(err, overrides) for err in e.errors()) if p[0] not in reported]
        raise ConfigError(source, problems) from e
    if problems:  # valid by the schema, but a free-form section holds a value with no canonical JSON form
        raise ConfigError(source, problems)
    return config


def _describe(err: Any, overrides: Sequence[Override]) -> tuple[str, str]:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        schema: type[BaseModel] | None = ExperimentConfig
        for part in loc[:-1]:
            schema = _section_class(schema, str(part))
        message = _unknown_key(str(loc[-1]), list(schema.model_fields) if schema else [])
    elif err["type"] == "missing":
        message = "required key is missing"
    for override in overrides:
        if tuple(map(str, loc[: len(override.path)])) == override.path:
            message += f" (set by --set {override.text})"
    return format_path(loc), message


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> LoadedConfig:
    """Read, override and validate a YAML config file; ConfigError names the file, line or field path."""
    source = str(path)
    parsed = [parse_override(text, source) for text in overrides]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, [("", f"cannot read the file: {getattr(e, 'strerror', None) or e}")]) from e
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(source, [("", _yaml_problem(e))]) from e
    if isinstance(data, dict) and parsed:
        problems = apply_overrides(data, parsed)
        if problems:
            raise ConfigError(source, problems)
    config = validate_config(data, source, parsed)
    return LoadedConfig(config=config, source=source, overrides=tuple(o.text for o in parsed))


def _yaml_problem(e: yaml.YAMLError) -> str:
    """`line L, column C: invalid YAML: <problem>` from PyYAML's error."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {e.problem}"
    return f"invalid YAML: {e}"
