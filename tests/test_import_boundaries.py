"""The package boundaries of DESIGN.md, encoded: a test fails when an import crosses them.

Also: torch and lightning are imported lazily, inside functions of `worker` and `plugins` only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mlhub"
PACKAGES = {"events", "eventlog", "projections", "readmodel", "analytics", "scheduler", "worker", "plugins",
            "artifacts", "registry", "api", "client", "metricdefs", "tracking", "tokens"}
#: Leaf modules every package may use (they import nothing of mlhub but errors): errors, extras, and settings
#: (not in events).
LEAVES = {"errors", "settings", "extras", "__init__"}
#: Entry points that wire everything together and may import anything.
ENTRY = {"cli", "commands", "demo"}

# The table of DESIGN.md: package -> mlhub packages it may import.
ALLOWED: dict[str, set[str]] = {
    "events": set(),
    "eventlog": {"events"},
    "projections": {"events", "eventlog", "readmodel", "analytics"},
    "readmodel": {"events"},
    "analytics": {"events"},
    "scheduler": {"events", "eventlog", "readmodel"},
    "worker": {"events", "eventlog", "artifacts", "plugins", "client"},
    "plugins": set(),
    "artifacts": set(),
    "registry": {"events", "eventlog", "readmodel"},
    "api": PACKAGES - {"worker", "api"},
    "client": {"events"},
    "metricdefs": {"events", "eventlog", "readmodel"},
    "tracking": {"events", "eventlog", "readmodel", "artifacts"},
    "tokens": {"events", "eventlog"},
}
#: The `worker` extra's modules (pyproject.toml): the light install (tests/test_light_install.py) has none of them.
HEAVY = {"torch", "lightning", "pytorch_lightning", "torchvision", "onnx", "onnxruntime", "sklearn"}
#: The SDK's Lightning logger (mlhub.client.MLHubLogger) imports lightning inside its class factory only.
LAZY_HEAVY_OK = {"worker", "plugins", "client"}


def _imports(tree: ast.AST) -> list[tuple[str, bool, int]]:
    """(module, imported at module level?, line) for every import in the tree."""
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((alias.name, not in_function, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, not in_function, child.lineno))
                if child.module == "mlhub":
                    found.extend((f"mlhub.{alias.name}", not in_function, child.lineno) for alias in child.names)
            visit(child, nested)

    visit(tree, False)
    return found


def violations(owner: str, source: str, where: str) -> list[str]:
    """Every import in `source` (a module of package `owner`) that crosses a boundary."""
    problems: list[str] = []
    for module, module_level, line in _imports(ast.parse(source)):
        root = module.split(".")[0]
        if root in HEAVY and (owner not in LAZY_HEAVY_OK or module_level):
            problems.append(f"{where}:{line} imports {module} " + (
                "at module level (import it inside the function that needs it)" if owner in LAZY_HEAVY_OK
                else f"but only worker, plugins and client may import {root}"))
        if root != "mlhub" or module == "mlhub":
            continue
        target = module.split(".")[1]
        if owner in ENTRY or target == owner:
            continue
        if owner in LEAVES - {"__init__"}:
            if target == "errors" and owner != "errors":  # errors imports nothing, so a leaf may raise its errors
                continue
            problems.append(f"{where}:{line}: leaf module {owner} imports {module}")
        elif target in LEAVES:
            if owner == "events" and target == "settings":
                problems.append(f"{where}:{line}: events does no I/O and may not read settings")
        elif target not in ALLOWED.get(owner, set()):
            problems.append(f"{where}:{line}: {owner} may not import {module} (allowed: "
                            f"{sorted(ALLOWED.get(owner, set())) or 'nothing of mlhub'})")
    return problems


def _owner(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_package_of_the_design_exists() -> None:
    assert {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()} >= PACKAGES


def test_no_import_crosses_a_boundary() -> None:
    problems: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        problems += violations(_owner(path), path.read_text(), str(path.relative_to(SRC)))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("owner", "source", "expected"),
    [
        ("events", "from mlhub.eventlog import EventLog", "events may not import mlhub.eventlog"),
        ("events", "import mlhub.settings", "may not read settings"),
        ("readmodel", "from mlhub import projections", "readmodel may not import mlhub.projections"),
        ("api", "from mlhub.worker.runner import run", "api may not import mlhub.worker.runner"),
        ("client", "from mlhub.readmodel import tables", "client may not import"),
        ("errors", "from mlhub.events import Envelope", "leaf module errors imports"),
        ("extras", "from mlhub.events import Envelope", "leaf module extras imports"),
        ("api", "def f():\n    import sklearn\n", "only worker, plugins and client may import sklearn"),
        ("scheduler", "def f():\n    import torch\n", "only worker, plugins and client may import torch"),
        ("worker", "import lightning\n", "at module level"),
        ("metricdefs", "from mlhub.projections import SqlProjector", "metricdefs may not import"),
        ("client", "from mlhub.eventlog import EventLog", "client may not import mlhub.eventlog"),
        ("client", "from mlhub.worker.metrics import JobMetrics", "client may not import mlhub.worker"),
        ("client", "import lightning\n", "at module level"),
    ],
)
def test_the_checker_catches_each_kind_of_crossing(owner: str, source: str, expected: str) -> None:
    assert any(expected in p for p in violations(owner, source, "x.py")), violations(owner, source, "x.py")


def test_the_checker_allows_what_the_table_allows() -> None:
    assert violations("worker", "def f():\n    import torch\n", "x.py") == []
    assert violations("projections", "from mlhub.readmodel import x\nfrom mlhub.errors import E", "x.py") == []
    assert violations("cli", "from mlhub.worker import w", "x.py") == []
    assert violations("client", "def f():\n    import lightning\n", "x.py") == []
    assert violations("extras", "from mlhub.errors import ExtraMissing", "x.py") == []
