"""Tracking overhead benchmark: training steps/s of the digits-mlp model with no logger, CSVLogger, MLHubLogger.

The model and datamodule are the digits-mlp plugin's, built from configs/digits-mlp.yaml (trainer settings as the
worker turns them into Trainer arguments), trained for `--steps` steps with the config's log_every_n_steps (10;
`--log-every-n-steps 1` for the worst case) and a callback that logs the training loss at every step (the plugin
itself logs per epoch only), so every N-th step hands a point to the logger. Variants, each run `--rounds`
times, interleaved with the order rotated per round, same seed every time:

  (a) no logger (baseline)   (b) Lightning's CSVLogger   (c) MLHubLogger -> JobMetrics -> a real embedded
  nats-server (fsync always, mlhub's default), sending through an asyncio loop thread as the worker does
  (system metrics off)   (d) the same with system metrics on, sampled every `--system-interval` seconds (1 s:
  fifteen times the default, to make any cost visible). (d) is reported against (c), target within 1%.
  `--system-sampler` says where (d) samples from:
    thread  (default) the SDK's way: a SystemSampler thread in this (the training) process, into the same
            JobMetrics as the training metrics, so it shares the process and its GIL with training;
    worker  the worker's way: another process runs mlhub.worker.jobsystem.JobSystemMetrics on this process's
            pid, with an event-log connection and JobMetrics of its own (as the worker does for a job's
            process), so training pays only for the CPU it takes on the machine.

Only the fit loop is timed (a callback's on_train_start..on_train_end): imports, data and Trainer setup, and the
logger's finalize (flush) are not; the flush wait is printed separately. Validation is off (limit_val_batches=0)
so the figure is steps/s of training alone, which makes per-step logging costs as visible as they can be.
Afterwards every MLHubLogger run's stored metrics_logged events are read back and their points counted.

    uv run python tools/bench/tracking_overhead.py                 # 3 rounds of 3,000 steps
    uv run python tools/bench/tracking_overhead.py --steps 4000 --rounds 5
    uv run python tools/bench/tracking_overhead.py --steps 2000 --rounds 3 --system-interval 1
    uv run python tools/bench/tracking_overhead.py --system-sampler worker
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mlhub.client.lightning_logger import logger_class
from mlhub.client.system import SystemSample, SystemSampler
from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.events import MetricsLogged
from mlhub.plugins import load_plugin
from mlhub.scheduler import load_config
from mlhub.worker import JobMetrics
from mlhub.worker.jobsystem import JobSystemMetrics
from mlhub.worker.training import trainer_kwargs

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "digits-mlp.yaml"
TARGET_OVERHEAD_PCT = 2.0
#: System metrics on against off (MLHubLogger both): the most they may slow the fit loop (percent).
TARGET_SYSTEM_PCT = 1.0
SYSTEM = "MLHubLogger+system"
VARIANTS = ("no logger", "CSVLogger", "MLHubLogger", SYSTEM)
MLHUB_VARIANTS = ("MLHubLogger", SYSTEM)


def cpu_s(stat_path: str) -> float | None:
    """User+system CPU seconds of a process or thread from its /proc stat file (None where there is none)."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def background_cpu(sender: JobMetrics, loop: LoopThread, server: EmbeddedNats) -> list[float | None]:
    """CPU seconds so far of the sender thread, the event log's loop thread and the nats-server process."""
    pid = server.process.pid if server.process is not None else 0
    return [cpu_s(f"/proc/self/task/{sender._thread.native_id}/stat"),
            cpu_s(f"/proc/self/task/{loop.thread.native_id}/stat"), cpu_s(f"/proc/{pid}/stat")]


class InProcessSystem:
    """System metrics the SDK's way: a sampler thread in this process into the run's own JobMetrics."""

    def __init__(self, sender: JobMetrics, interval_s: float) -> None:
        def sink(sample: SystemSample) -> None:
            sender.add([(k, v, sample.step, 0, sample.timestamp_ms) for k, v in sample.values.items()])

        self.sampler = SystemSampler(sink, interval_s, name=sender.run_id).start()

    def stop(self) -> tuple[int, int, float | None]:
        """(samples, points, CPU seconds of the sampler's thread)."""
        thread = self.sampler._thread  # noqa: SLF001 - its CPU time, read from /proc
        used_s = cpu_s(f"/proc/self/task/{thread.native_id}/stat") if thread else None
        self.sampler.stop()
        return self.sampler.samples, self.sampler.points, used_s


def _sample_from_outside(pid: int, url: str, run_id: str, interval_s: float, ready: Any, stop: Any,
                         out: Any) -> None:
    """The worker's side of a job, in a process of its own: JobSystemMetrics on `pid` sending through an event
    log of its own, until `stop`; puts (samples, points, CPU s of the sampler's thread, delivered) on `out`."""
    import importlib

    for module in ("psutil", "pynvml"):  # imported already in a worker that has run a job: not the sampler's cost
        importlib.import_module(module)
    loop = LoopThread()
    event_log = EventLog(url)
    loop.call(event_log.__aenter__())

    def send(envelopes: Any) -> None:
        loop.call(event_log.append_many(envelopes), event_log.append_deadline_s + 30)

    ctx = SimpleNamespace(job=SimpleNamespace(run_id=run_id, job_id=run_id), attempt=1, producer="bench",
                          send_metrics=send, metric_interval_s=0.5, declared_metrics=None,
                          system_metrics_s=interval_s)
    system = JobSystemMetrics(ctx, pid)  # type: ignore[arg-type]
    ready.set()
    stop.wait()
    assert system.sampler is not None
    thread = system.sampler._thread  # noqa: SLF001 - its CPU time, read from /proc
    used_s = cpu_s(f"/proc/self/task/{thread.native_id}/stat") if thread else None
    points, delivered = system.close()
    out.put((system.sampler.samples, points, used_s, delivered))
    loop.call(event_log.__aexit__(None, None, None))
    loop.stop()


class WorkerSideSystem:
    """System metrics the worker's way: another process samples this one (mlhub.worker.jobsystem)."""

    def __init__(self, url: str, run_id: str, interval_s: float) -> None:
        mp = multiprocessing.get_context("spawn")
        ready, self._stop, self._out = mp.Event(), mp.Event(), mp.Queue()
        self.process = mp.Process(target=_sample_from_outside, daemon=True,
                                  args=(os.getpid(), url, run_id, interval_s, ready, self._stop, self._out))
        self.process.start()
        if not ready.wait(120):  # its start (imports, connecting) is not the fit loop's cost
            raise RuntimeError("the worker-side sampler process did not start")

    def stop(self) -> tuple[int, int, float | None]:
        """(samples, points, CPU seconds of the sampler's thread in that process)."""
        self._stop.set()
        samples, points, used_s, delivered = self._out.get(timeout=120)
        self.process.join(30)
        assert delivered, "the worker-side system points were not all appended"
        return samples, points, used_s


def log_metrics_cost_us(logger: Any, calls: int = 5_000) -> float:
    """Microseconds of one MLHubLogger.log_metrics call as Lightning makes it per step (a loss and the epoch)."""
    start = time.perf_counter()
    for step in range(calls):
        logger.log_metrics({"train_loss_step": 0.5, "epoch": 3.0}, step=step)
    return (time.perf_counter() - start) / calls * 1e6


class LoopThread:
    """An asyncio loop in a daemon thread holding the EventLog (what the worker's loop is to train_job)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout_s: float = 90.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def callbacks_classes() -> tuple[type[Any], type[Any]]:
    import lightning as L

    class FitTimer(L.Callback):
        """Times the fit loop only: on_train_start .. on_train_end (the logger's finalize comes after)."""

        def __init__(self) -> None:
            self.start = self.end = 0.0
            self.steps = 0

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.end = time.perf_counter()
            self.steps = int(trainer.global_step)

    class StepLoss(L.Callback):
        """Logs the training loss at every step (the plugin logs train_loss per epoch only)."""

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            pl_module.log("train_loss_step", outputs["loss"], on_step=True, on_epoch=False, batch_size=len(batch[1]))

    return FitTimer, StepLoss


def fit_once(config: dict[str, Any], steps: int, logger: Any, tmp: Path, every: int = 1) -> tuple[int, float, float]:
    """Train `steps` steps; (steps done, fit-loop seconds, seconds from on_train_end until fit returned)."""
    import lightning as L
    import torch

    fit_timer_class, step_loss_class = callbacks_classes()
    plugin = load_plugin(config["plugin"])
    kwargs = trainer_kwargs(dict(config["trainer"]), "cpu")
    kwargs.update(max_epochs=-1, max_steps=steps, limit_train_batches=None, limit_val_batches=0,
                  log_every_n_steps=every)
    if kwargs.get("deterministic"):
        torch.use_deterministic_algorithms(True)
    L.seed_everything(int(config["seed"]), workers=True, verbose=False)
    spec = plugin.build_datamodule(config)
    module = plugin.build_module(config)
    timer = fit_timer_class()
    trainer = L.Trainer(**kwargs, logger=logger, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=str(tmp),
                        callbacks=[timer, step_loss_class()])
    trainer.fit(module, spec.datamodule)
    returned = time.perf_counter()
    return timer.steps, timer.end - timer.start, returned - timer.end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3_000, help="training steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (interleaved)")
    parser.add_argument("--log-every-n-steps", type=int, default=None, metavar="N",
                        help="Lightning's log_every_n_steps (default: the config's, 10; 1: every step, the worst case)")
    parser.add_argument("--interval", type=float, default=0.5, help="JobMetrics interval_s (worker default 0.5)")
    parser.add_argument("--system-interval", type=float, default=1.0, metavar="S",
                        help=f"seconds between system-metric samples of the {SYSTEM!r} variant (default 1; "
                             "MLHUB_SYSTEM_METRICS_S defaults to 15)")
    parser.add_argument("--system-sampler", choices=("thread", "worker"), default="thread",
                        help=f"where the {SYSTEM!r} variant samples from: a thread of this process (the SDK's "
                             "way, default) or another process (the worker's way)")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    from lightning.pytorch.loggers import CSVLogger

    for name in ("lightning.pytorch", "lightning.fabric"):  # after the import, which sets them to INFO
        logging.getLogger(name).setLevel(logging.ERROR)

    config = load_config(CONFIG).config.model_dump(mode="json")
    every = args.log_every_n_steps or int(config["trainer"]["log_every_n_steps"])
    mlhub_logger = logger_class()
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    finalize_s: dict[str, list[float]] = {v: [] for v in VARIANTS}
    runs: list[tuple[str, int]] = []  # MLHubLogger runs: (run_id, points the logger and the sampler were given)
    samplers: dict[str, InProcessSystem | WorkerSideSystem] = {}  # the system variant's run -> its sampler
    system_samples: list[int] = []
    system_cpu: list[float] = []  # the system variant's runs: CPU s of the sampler thread / fit-loop seconds
    background: list[list[float | None]] = []  # MLHubLogger runs: CPU s of sender thread, loop thread, nats-server

    with tempfile.TemporaryDirectory(prefix="mlhub-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedNats(tmp / "nats", sync="always") as server:
            assert server.url is not None
            loop = LoopThread()
            event_log = EventLog(server.url)
            loop.call(event_log.__aenter__())
            try:
                def send(envelopes: Any) -> None:  # as the worker's send_metrics
                    loop.call(event_log.append_many(envelopes), event_log.append_deadline_s + 30)

                def no_logger(run: str) -> Any:
                    return False

                def csv_logger(run: str) -> Any:
                    return CSVLogger(str(tmp / "csv"), name=run)

                def mlhub(run: str) -> Any:
                    sender = JobMetrics(run, send, producer="bench", interval_s=args.interval)
                    return mlhub_logger(sender)

                def mlhub_system(run: str) -> Any:
                    logger = mlhub(run)
                    assert server.url is not None
                    samplers[run] = (InProcessSystem(logger.run, args.system_interval)
                                     if args.system_sampler == "thread"
                                     else WorkerSideSystem(server.url, run, args.system_interval))
                    return logger

                makers: dict[str, Callable[[str], Any]] = {
                    "no logger": no_logger, "CSVLogger": csv_logger, "MLHubLogger": mlhub, SYSTEM: mlhub_system}
                fit_once(config, 100, False, tmp / "warmup")  # first-use costs (kernels, lazy init) off the clock
                print(f"digits-mlp, {args.steps:,} steps/run, log_every_n_steps={every}, seed {config['seed']}, "
                      f"torch threads {torch_threads()}, cores {os.cpu_count()}")
                for r in range(args.rounds):
                    order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
                    for variant in order:
                        run_id = f"bench-{uuid.uuid4().hex[:12]}"
                        logger = makers[variant](run_id)
                        cpu_before = background_cpu(logger.run, loop, server) if variant in MLHUB_VARIANTS else []
                        steps, fit_s, fin_s = fit_once(config, args.steps, logger, tmp / run_id, every)
                        assert steps == args.steps, (variant, steps)
                        rates[variant].append(steps / fit_s)
                        finalize_s[variant].append(fin_s)
                        extra = ""
                        if variant in MLHUB_VARIANTS:
                            sampler = samplers.get(run_id)
                            system_points = 0
                            if sampler is not None:
                                samples, system_points, used_s = sampler.stop()
                                system_samples.append(samples)
                                if used_s is not None:
                                    system_cpu.append(used_s / fit_s)
                            used = [None if a is None or b is None else b - a
                                    for a, b in zip(cpu_before, background_cpu(logger.run, loop, server),
                                                    strict=True)]
                            if variant == "MLHubLogger":
                                background.append(used)
                            delivered = logger.run.close()
                            given = logger.run.points_logged + system_points
                            runs.append((run_id, given))
                            extra = (f"  points {given:,}, events {logger.run.batches_sent}, "
                                     f"failures {logger.run.failures}, delivered {delivered}"
                                     + (f", system samples {system_samples[-1]}" if sampler is not None else ""))
                        print(f"  round {r + 1} {variant:<18} {steps / fit_s:>8,.1f} steps/s  "
                              f"(fit loop {fit_s:.2f}s, after on_train_end {fin_s * 1000:.0f} ms){extra}")

                print("\n== median of", args.rounds, "runs")
                base = statistics.median(rates["no logger"])
                verdicts = []
                for variant in VARIANTS:
                    median = statistics.median(rates[variant])
                    spread = f"[{min(rates[variant]):,.1f} .. {max(rates[variant]):,.1f}]"
                    if variant == "no logger":
                        print(f"  baseline: {variant:<12} {median:>8,.1f} steps/s {spread}")
                        continue
                    overhead = (base - median) / base * 100
                    verdict = ""
                    if variant == "MLHubLogger":
                        ok = overhead <= TARGET_OVERHEAD_PCT
                        verdicts.append(ok)
                        verdict = f"  target <= {TARGET_OVERHEAD_PCT:g}%: {'met' if ok else 'MISSED'}"
                    print(f"  {variant:<22} {median:>8,.1f} steps/s {spread}  overhead {overhead:+.2f}%{verdict}"
                          f"  (finalize median {statistics.median(finalize_s[variant]) * 1000:.0f} ms, untimed)")

                off, on = statistics.median(rates["MLHubLogger"]), statistics.median(rates[SYSTEM])
                system_pct = (off - on) / off * 100
                paired = [(a - b) / a * 100 for a, b in zip(rates["MLHubLogger"], rates[SYSTEM], strict=True)]
                print(f"\n== system metrics on (every {args.system_interval:g} s, sampled from "
                      f"{'a thread of this process' if args.system_sampler == 'thread' else 'another process'}, median "
                      f"{statistics.median(system_samples) if system_samples else 0:g} samples per run) against off, "
                      f"same run, both MLHubLogger")
                print(f"  on/off steps/s ratio {on / off:.4f}: cost {system_pct:+.2f}%  "
                      f"target <= {TARGET_SYSTEM_PCT:g}%: {'met' if system_pct <= TARGET_SYSTEM_PCT else 'MISSED'}"
                      f"  (per round: {', '.join(f'{p:+.2f}%' for p in paired)})")
                if system_cpu:
                    print(f"  sampler thread CPU: median {statistics.median(system_cpu) * 100:.3f}% of the fit loop's "
                          f"wall time (/proc, 10 ms ticks; max {max(system_cpu) * 100:.3f}%)")
                probe_sampler = SystemSampler(lambda sample: None, 1.0)
                probe_sampler.sample()
                start = time.perf_counter()
                for _ in range(50):
                    probe_sampler.sample()
                sample_ms = (time.perf_counter() - start) / 50 * 1000
                print(f"  one sample costs {sample_ms:.2f} ms of the sampler's thread = "
                      f"{sample_ms / (args.system_interval * 1000) * 100:.3f}% of one core at this interval "
                      f"({sample_ms / 15_000 * 100:.4f}% at the default 15 s)")

                print("\n== where MLHubLogger's time goes")
                # A sender that sends nothing until close: the training thread's own cost, no GIL contention.
                probe = mlhub_logger(JobMetrics(f"bench-probe-{uuid.uuid4().hex[:8]}", send, producer="bench",
                                                  interval_s=3600, max_points=10**9))
                cost = log_metrics_cost_us(probe)
                probe.run.close()
                step_us = 1e6 / base
                print(f"  training thread: log_metrics {cost:.1f} us/call, one call per {every} step(s) = "
                      f"{cost / every / step_us * 100:.3f}% of a baseline step ({step_us:,.0f} us)")
                fit_s_all = args.steps / statistics.median(rates["MLHubLogger"])
                for i, name in enumerate(("sender thread", "event-log loop thread", "nats-server process")):
                    values = [v for b in background if (v := b[i]) is not None]
                    if values:
                        print(f"  {name:<21} CPU per run: median {statistics.median(values) * 1000:,.0f} ms "
                              f"= {statistics.median(values) / fit_s_all * 100:.2f}% of the fit loop's wall time "
                              f"(/proc, 10 ms ticks)")
                noise = (max(rates["no logger"]) - min(rates["no logger"])) / base * 100
                print(f"  run-to-run spread of the baseline itself: {noise:.2f}% of its median")

                print("\n== stored points (metrics_logged events read back from the event log)")
                for run_id, given in runs:
                    agg = loop.call(event_log.read_aggregate("run", run_id))
                    events = [r.envelope.event for r in agg.events if isinstance(r.envelope.event, MetricsLogged)]
                    stored = sum(e.num_points for e in events)
                    print(f"  {run_id}: given {given:,}, stored {stored:,} in {len(events)} events: "
                          f"{'all arrived' if stored == given else 'MISMATCH'}")
            finally:
                loop.call(event_log.__aexit__(None, None, None))
                loop.stop()


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


if __name__ == "__main__":
    main()
