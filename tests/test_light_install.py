"""The light install: mlhub's wheel without extras, in a fresh venv, has no torch, lightning, ONNX or
scikit-learn, and still runs the SDK, the CLI, the API and the projectors; the commands that train refuse
with the pip command of the `worker` extra.

The wheel is built from this checkout (`uv build`) and installed into a new venv of this interpreter with
`uv pip install --offline`: nothing is downloaded. uv's pip resolver cannot read every cached wheel's
metadata offline (it fetched only one platform's at lock time), so the distributions an install without
extras needs are first put in, pinned from uv.lock (`uv export --no-dev`, no extras), and the wheel is then
installed with dependency resolution against them: had the wheel required torch, that install would have
pulled it in (or failed) and the checks below would fail. One venv serves the whole module. The check
itself (mlhub.extras, reading the extra from mlhub's metadata) is tested here too, in this environment.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from tests.client.conftest import WRITER, HubStack, running_stack

from mlhub import extras
from mlhub.errors import ExtraMissing

ROOT = Path(__file__).resolve().parents[1]
#: The modules of the `worker` extra (pyproject.toml), none of which the light install may hold.
WORKER_MODULES = ("torch", "lightning", "pytorch_lightning", "onnx", "onnxruntime", "sklearn")


def test_the_worker_extra_is_read_from_mlhubs_own_metadata() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["worker"]
    names = [re.match(r"[A-Za-z0-9._-]+", requirement).group(0) for requirement in declared]  # type: ignore[union-attr]
    assert sorted(extras.requirements(extras.WORKER)) == sorted(names) and "torch" in names
    assert extras.missing(extras.WORKER) == []  # the repository's environment trains
    extras.require(extras.WORKER, "mlhub worker")


def test_a_missing_extra_is_named_with_its_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = metadata.distribution

    def distribution(name: str) -> metadata.Distribution:
        if name in {"torch", "onnx"}:
            raise metadata.PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr(metadata, "distribution", distribution)
    with pytest.raises(ExtraMissing, match=r"^mlhub worker needs the 'worker' extra of mlhub, which is not installed "
                                           r"\(missing: onnx, torch\): pip install 'mlhub\[worker\]'$"):
        extras.require(extras.WORKER, "mlhub worker")


def _env() -> dict[str, str]:
    """The environment of the commands run here: no MLHUB_* of the caller, no venv or path of the test's own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLHUB_") and k not in {"VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT"}}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


def _uv(*args: str | Path, cwd: Path = ROOT) -> str:
    uv = shutil.which("uv")
    assert uv is not None, "the light-install test needs uv on PATH (as scripts/gate.sh does)"
    done = subprocess.run([uv, *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"uv {' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def light_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The python of a fresh venv holding mlhub's wheel installed without extras."""
    root = tmp_path_factory.mktemp("light")
    _uv("build", "--offline", "--wheel", "--out-dir", root / "dist", "--quiet")
    (wheel,) = (root / "dist").glob("mlhub-*.whl")
    _uv("export", "--locked", "--offline", "--no-dev", "--no-emit-project", "--no-header", "--quiet",
        "--format", "requirements.txt", "--output-file", root / "requirements.txt")
    _uv("venv", "--offline", "--quiet", "--python", sys.executable, root / "venv", cwd=root)
    python = root / "venv" / "bin" / "python"
    _uv("pip", "install", "--offline", "--quiet", "--python", python, "--no-deps", "-r", root / "requirements.txt",
        cwd=root)
    _uv("pip", "install", "--offline", "--quiet", "--python", python, wheel, cwd=root)
    _uv("pip", "check", "--python", python, cwd=root)
    yield python


def _python(python: Path, code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-c", code], cwd=cwd, env={**_env(), **env}, capture_output=True,
                          text=True, timeout=120)


def test_the_light_install_has_no_training_stack(light_python: Path, tmp_path: Path) -> None:
    done = _python(light_python, "import importlib.util, mlhub\n"
                   f"print([m for m in {WORKER_MODULES!r} if importlib.util.find_spec(m) is not None])\n"
                   "print(mlhub.__file__)", tmp_path)
    assert done.returncode == 0, done.stderr
    found, location = done.stdout.splitlines()
    assert found == "[]", f"the light install holds {found}"
    assert location.startswith(str(light_python.parents[1])), f"mlhub imported from {location}, not the venv"
    assert "site-packages" in location


def test_its_cli_helps_and_the_training_commands_name_the_extra(light_python: Path, tmp_path: Path) -> None:
    mlhub = str(light_python.parent / "mlhub")
    env = {**_env(), "MLHUB_DATA_DIR": str(tmp_path / "data")}
    helped = subprocess.run([mlhub, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "worker" in helped.stdout, helped.stderr
    for command in (["worker"], ["up"], ["demo", "--exit"]):
        done = subprocess.run([mlhub, *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "error [EXTRA_MISSING]" in done.stderr and "pip install 'mlhub[worker]'" in done.stderr, done.stderr
        assert "torch" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "data").exists(), "a refused command started nothing"


def test_the_sdks_lightning_logger_names_what_to_install(light_python: Path, tmp_path: Path) -> None:
    done = _python(light_python, "from mlhub.errors import ExtraMissing\n"
                   "try:\n    from mlhub.client import MLHubLogger\n"
                   "except ImportError as e:\n    assert isinstance(e, ExtraMissing), repr(e)\n    print(e)", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "MLHubLogger needs lightning" in done.stdout and "pip install 'mlhub[worker]'" in done.stdout


SCRIPT = """
import os, sys
from mlhub.client import Hub

with Hub(os.environ["HUB_URL"], os.environ["HUB_TOKEN"]) as hub:
    with hub.start_run("light-install", params={"lr": 0.1, "layers": 2}) as run:
        for step in range(20):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    assert run.status == "finished" and run.errors == [], (run.status, run.errors)
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
assert not heavy, heavy
print(run.run_id)
"""


@pytest.fixture(scope="module")
def light_hub(light_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStack]:
    """The API (uvicorn) and `mlhub projector` run by the light venv's python, over a nats-server of their own."""
    with running_stack(tmp_path_factory.mktemp("light-hub"), python=str(light_python)) as stack:
        yield stack


def test_an_sdk_script_tracks_a_run_against_a_light_hub(light_python: Path, light_hub: HubStack,
                                                        tmp_path: Path) -> None:
    done = subprocess.run([str(light_python), "-c", SCRIPT, ",".join(WORKER_MODULES)], cwd=tmp_path,
                          env={**_env(), "HUB_URL": light_hub.url, "HUB_TOKEN": WRITER,
                               "MLHUB_SPOOL_DIR": str(tmp_path / "spool")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    detail = light_hub.run_detail(run_id)
    assert detail["run"]["status"] == "finished"
    assert detail["params"] == {"lr": "0.1", "layers": "2"}
    loss = next(m for m in detail["metrics"] if m["key"] == "loss")
    assert loss["count"] == 20 and loss["last_step"] == 19
    last_seq = light_hub.run_events(run_id)[-1]["seq"]
    assert light_hub.projected_steps(run_id, "loss", last_seq) == list(range(20))
