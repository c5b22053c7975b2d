"""The mlhub command, run as a user would: in subprocesses, against servers the tests start themselves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlhub.errors import EventLogUnauthorized
from mlhub.eventlog import EventLog, NatsAuth, UserPassword
from mlhub.eventlog.auth import read_credentials
from mlhub.events import Envelope, TagsSet

MLHUB = [sys.executable, "-m", "mlhub.cli"]
#: Prelude of the subprocess probes: records every attempt to import torch or lightning, even a failing one.
HEAVY_IMPORT_SPY = """
import sys
attempts = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning'):
            attempts.append(name)
        return None
sys.meta_path.insert(0, Spy())
"""


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    env.update({"MLHUB_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **extra})
    return env


def test_help_leaves_torch_and_lightning_unimported() -> None:
    """Checked with an import hook, so even an attempt that fails (package not installed) is caught."""
    probe = HEAVY_IMPORT_SPY + """
sys.argv = ['mlhub', '--help']
from mlhub.cli import main
try:
    main()
except SystemExit as e:
    assert e.code == 0, e.code
for cmd in ('nats', 'events', 'demo', 'up', 'projector', 'query', 'replay', 'audit', 'submit', 'cancel', 'runs',
            'show', 'reproduce', 'models'):
    sys.argv = ['mlhub', cmd, '--help']
    try:
        main()
    except SystemExit:
        pass
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning'))
print('ATTEMPTS', attempts, 'LOADED', heavy)
assert not attempts and not heavy
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage: mlhub" in result.stdout and "ATTEMPTS [] LOADED []" in result.stdout


def test_help_lists_lazy_commands_without_importing_them() -> None:
    """`mlhub --help` prints each lazy command's short help from the table in mlhub.cli, importing none of
    the command modules; the table says exactly what each command's own docstring says."""
    probe = """
import sys
sys.argv = ['mlhub', '--help']
from mlhub.cli import LAZY_COMMANDS, main
try:
    main()
except SystemExit as e:
    assert e.code == 0, e.code
loaded = sorted(m for m in sys.modules if m.startswith('mlhub.') and m.split('.')[1] in
                ('api', 'client', 'events', 'eventlog', 'projections', 'worker', 'scheduler', 'registry'))
loaded += sorted({t.split(':')[0] for t, _ in LAZY_COMMANDS.values()} & set(sys.modules))
print('LOADED', loaded)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout, result.stdout
    from click.testing import CliRunner

    from mlhub.cli import LAZY_COMMANDS, main

    for name, (_target, short_help) in LAZY_COMMANDS.items():
        command = main.get_command(None, name)  # type: ignore[arg-type]  # the lazy group ignores the context
        assert command is not None and command.get_short_help_str(limit=1000) == short_help, name
        assert name in CliRunner().invoke(main, ["--help"]).output


@pytest.fixture
def running_nats(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`mlhub nats` in the foreground, as a user starts it; yields the process and the URL it printed."""
    proc = subprocess.Popen(MLHUB + ["nats"], env=cli_env(tmp_path / "data"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    url = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"listening at (nats://\S+)", line)
        if match:
            url = match.group(1)
            break
        assert line or proc.poll() is None, "mlhub nats exited early"
    assert url, "mlhub nats did not report its URL"
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _server_pid(data_dir: Path) -> int:
    return int(json.loads((data_dir / "nats" / "server.json").read_text())["pid"])


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


async def test_nats_serves_tail_prints_and_ctrl_c_stops_everything(
    running_nats: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    proc, url = running_nats
    data_dir = tmp_path / "data"
    server_pid = _server_pid(data_dir)
    assert psutil.Process(server_pid).name() == "nats-server"
    # The printed URL carries no credentials and alone opens nothing; the admin's file in the data dir does.
    with pytest.raises(EventLogUnauthorized):
        await EventLog(url, connect_timeout_s=5).connect()
    admin = read_credentials(data_dir / "nats" / "credentials" / "admin")
    assert isinstance(admin, UserPassword)
    async with EventLog(url, auth=NatsAuth(user=admin)) as log:
        event = Envelope(event=TagsSet(run_id="cli", tags={"k": "v"}), producer="test")
        await log.append(event, expected_version=0)
    # `mlhub events tail` finds the running embedded server through the data dir.
    tail = subprocess.run(MLHUB + ["events", "tail", "--subject", "mlhub.ev.run.cli.>"], env=cli_env(data_dir),
                          capture_output=True, text=True, timeout=60)
    assert tail.returncode == 0, tail.stderr
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [(line["seq"], line["subject"], line["type"]) for line in lines] == [
        (1, "mlhub.ev.run.cli.tags_set", "run.tags_set")
    ]
    assert lines[0]["event_id"] == str(event.event_id) and lines[0]["payload"]["tags"] == {"k": "v"}
    # A second embedded server on the same store is refused, naming the running one.
    second = subprocess.run(MLHUB + ["nats"], env=cli_env(data_dir), capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "already runs the embedded nats-server" in second.stderr
    assert url in second.stderr
    # Ctrl-C: mlhub stops the server and exits cleanly; no process is left behind.
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    assert _wait_gone(server_pid)
    assert not (data_dir / "nats" / "server.json").exists()


def test_a_crashed_parent_leaves_no_orphan_server(running_nats: tuple[subprocess.Popen[str], str],
                                                  tmp_path: Path) -> None:
    proc, _ = running_nats
    server_pid = _server_pid(tmp_path / "data")
    proc.kill()  # SIGKILL: mlhub gets no chance to clean up
    proc.wait()
    assert _wait_gone(server_pid), "nats-server outlived its parent"


def test_nats_url_set_means_start_none(tmp_path: Path, nats_url: str) -> None:
    result = subprocess.run(MLHUB + ["nats"], env=cli_env(tmp_path / "cli", MLHUB_NATS_URL=nats_url),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "MLHUB_NATS_URL is set" in result.stderr
    assert not (tmp_path / "cli").exists()


def test_tail_uses_the_configured_server_and_starts_none(tmp_path: Path, nats_url: str) -> None:
    import asyncio

    async def seed() -> None:
        async with EventLog(nats_url) as log:
            for i in range(3):
                await log.append(Envelope(event=TagsSet(run_id="t", tags={"i": str(i)}), producer="test"))

    asyncio.run(seed())
    result = subprocess.run(MLHUB + ["events", "tail", "--from-seq", "2"],
                            env=cli_env(tmp_path / "cli", MLHUB_NATS_URL=nats_url),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [2, 3]
    assert not (tmp_path / "cli").exists()


def test_bad_settings_are_named(tmp_path: Path) -> None:
    result = subprocess.run(MLHUB + ["demo"], env=cli_env(tmp_path, MLHUB_NATS_SYNC="sometimes"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "nats_sync" in result.stderr and "sometimes" in result.stderr


def test_projector_and_scheduler_leave_torch_and_lightning_unimported(tmp_path: Path) -> None:
    """The projector's and the scheduler's whole code paths load without torch (an import hook catches attempts)."""
    probe = HEAVY_IMPORT_SPY + f"""
from pathlib import Path
import mlhub.commands.projector, mlhub.commands.jobs, mlhub.commands.query, mlhub.commands.audit
from mlhub.projections import build_projectors, run_until
from mlhub.projections.audit import verify
from mlhub.readmodel import create_engine, migrate
from mlhub.scheduler import load_config
from mlhub.settings import Settings
engine = create_engine('sqlite:///{tmp_path / "probe.db"}', writer=True)
migrate(engine)
build_projectors(Settings(data_dir=Path({str(tmp_path)!r})), engine)
load_config('configs/digits-mlp.yaml')
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning'))
print('ATTEMPTS', attempts, 'LOADED', heavy)
assert not attempts and not heavy
"""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ATTEMPTS [] LOADED []" in result.stdout


def test_a_client_command_with_no_hub_at_the_url_says_hub_unavailable(tmp_path: Path) -> None:
    """The CLI's HubClient is the SDK's Transport: no hub at MLHUB_URL is the SDK's HubUnavailable, printed as
    error [HUB_UNAVAILABLE] with the URL and what to do; an error the hub answered with keeps the hub's code."""
    import socket

    from mlhub.client.errors import HubAuthError, HubRequestError, HubUnavailable
    from mlhub.commands.common import error_code

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    env.update(MLHUB_DATA_DIR=str(tmp_path), MLHUB_URL=f"http://127.0.0.1:{port}", MLHUB_TOKEN="t")
    result = subprocess.run([*MLHUB, "runs"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("error [HUB_UNAVAILABLE]: cannot reach the hub at ")
    assert f"127.0.0.1:{port}" in result.stderr and "mlhub up" in result.stderr
    assert error_code(HubRequestError("m", status=404, api_code="RUN_NOT_FOUND")) == "RUN_NOT_FOUND"
    assert error_code(HubAuthError("m", status=401, api_code="UNAUTHENTICATED")) == "UNAUTHENTICATED"
    assert error_code(HubUnavailable("m", status=503, api_code="EVENT_LOG_UNAVAILABLE")) == "EVENT_LOG_UNAVAILABLE"
    assert error_code(HubUnavailable("m")) == "HUB_UNAVAILABLE"
