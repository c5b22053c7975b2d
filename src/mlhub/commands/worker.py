"""`mlhub worker`: take queued jobs of a pool from the event log and train them until Ctrl-C/SIGTERM.

Ctrl-C or SIGTERM stops the running job after its current batch and gives it back (job.failed retryable
"WorkerStopped", then nak: another worker of the pool takes it as a new attempt). `--concurrency N` runs N
worker processes (one job each: a Lightning run seeds process-global RNGs, so two runs never share a process).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from typing import Any

import click

from mlhub import extras
from mlhub.commands.common import event_log_url, fail, load_settings, open_event_log
from mlhub.errors import MlhubError


@click.command("worker")
@click.option("--pool", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="Which pool's jobs to take (the config's `pool:`).")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes to run, one job each.")
@click.option("--ack-wait", "ack_wait_s", type=click.FloatRange(min=0.5), default=30.0, show_default=True,
              help="Seconds without a sign of life after which a job is redelivered to another worker "
                   "(applied to the pool's shared consumer).")
@click.option("--max-deliver", type=click.IntRange(min=1), default=5, show_default=True,
              help="Deliveries of one queued job at most (the pool's shared consumer).")
@click.option("--finish-current", is_flag=True,
              help="On Ctrl-C/SIGTERM finish the running job instead of giving it back.")
def worker(pool: str, concurrency: int, ack_wait_s: float, max_deliver: int, finish_current: bool) -> None:
    """Run a worker of the --pool: train queued jobs until Ctrl-C or SIGTERM."""
    try:
        extras.require(extras.WORKER, "mlhub worker")
    except MlhubError as e:
        fail(e)
    if concurrency > 1:
        _run_children(concurrency, sys.argv[1:])
        return
    from mlhub.artifacts import store_from_settings
    from mlhub.worker import Worker, WorkerConfig
    from mlhub.worker.jobprocess import stop_job_server

    settings = load_settings()
    config = WorkerConfig(pool=pool, ack_wait_s=ack_wait_s, max_deliver=max_deliver,  # type: ignore[arg-type]
                          producer=settings.producer, undeclared_metrics=settings.undeclared_metrics,
                          job_memory_mb=settings.job_memory_mb, job_kill_grace_s=settings.job_kill_grace_s,
                          system_metrics_s=settings.system_metrics_s)

    async def main(url: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with open_event_log(settings, url, f"mlhub-worker-{config.worker_id}") as log:
            runner = Worker.local(log, settings.data_dir, config, store=store_from_settings(settings))
            click.echo(f"worker {config.worker_id} on pool {pool}: waiting for jobs (Ctrl-C to stop)", err=True)
            try:
                await runner.run(stop, finish_current=finish_current)
            finally:
                stop_job_server()  # its job processes have ended: the worker leaves no process behind
        click.echo(f"worker {config.worker_id} stopped after {runner.messages_handled} job message(s)", err=True)

    try:
        with event_log_url(settings) as url:
            asyncio.run(main(url))
    except MlhubError as e:
        fail(e)


def _run_children(count: int, args: list[str]) -> None:
    """Run `count` single worker processes and forward SIGINT/SIGTERM to them; wait for all."""
    args = [a for i, a in enumerate(args)
            if not a.startswith("--concurrency") and not (i > 0 and args[i - 1] == "--concurrency")]
    children = [subprocess.Popen([sys.executable, "-m", "mlhub.cli", *args, "--concurrency", "1"])
                for _ in range(count)]

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [child.wait() for child in children]
    if any(codes):
        sys.exit(max(codes))
