"""Each job attempt in a process of its own: a memory limit, and a hard kill on cancel, timeout and shutdown.

`run_job_process(ctx, limits)` (blocking: the worker runs it in its training thread, where `train_job` ran
before) starts a child from a multiprocessing fork server that imported torch and lightning once (so torch is
imported in job processes only, never in the worker, and a job starts in milliseconds, not the seconds an
import takes). The child runs `train_job` with a TrainingContext whose `publish`, `send_metrics` and artifact
`put_file` are requests over a pipe; this thread serves them with the worker's own callables (its event log
and artifact store) and answers "ok" or the error. So:

- the worker stays the one writer of a job's events: the lifecycle (job.*, run.started/finished/failed/
  cancelled) is appended by the worker after the child ended, whatever way it ended;
- metrics stay exactly-once: the child waits for the answer to each request before its next one, and every
  envelope carries its event id (JetStream dedup), so a batch is appended once or, when the child is killed
  before it sent it, not at all; a killed child leaves nothing half-written;
- `ctx.stop` (cancel, timeout, worker shutdown) asks the child to stop after its current batch; if it has not
  ended `kill_grace_s` later (stuck building a model, in a data loader, in native code) it gets SIGKILL.

System metrics: the job's process and its children are sampled from this process (mlhub.worker.jobsystem), their
points appended through the same `send_metrics` and stopped and flushed before this function returns, so before
the worker records the outcome. The child runs no sampler thread: its memory budget is the job's alone.

Memory: the child sets RLIMIT_AS to its own address space after the imports plus `memory_mb` (MLHUB_JOB_MEMORY_MB).
RLIMIT_AS counts virtual memory, not resident memory: torch and lightning alone map about 3.6 GB of address
space on CPU (0.8 GB resident), which is why the limit is a budget above that, not a total. An allocation past
it fails (MemoryError, or torch's "can't allocate memory" RuntimeError), and the job fails with
JOB_OUT_OF_MEMORY; the worker goes on with its next job. CUDA maps very large virtual ranges when it starts, so
on the gpu pool leave MLHUB_JOB_MEMORY_MB unset and bound the worker with a cgroup (docs/worker.md).

Process tree: the child ignores SIGINT and SIGTERM (the worker decides when it stops) and has
PR_SET_PDEATHSIG=SIGKILL towards the fork server, which has the same towards the worker
(mlhub.worker._jobserver_init): no job outlives its worker, even a SIGKILLed one. `mlhub worker` stops the
server when it stops (`stop_job_server`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mlhub.artifacts import ArtifactStore, StoredArtifact
from mlhub.errors import MlhubError
from mlhub.events import DomainEvent, Envelope, JobQueued
from mlhub.worker.jobsystem import JobSystemMetrics
from mlhub.worker.training import TrainingContext, TrainingResult, train_job

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
#: How often the serving thread looks at ctx.stop while it waits for the child's next request (seconds).
POLL_S = 0.05
#: How long a job's process may take to exit after its last message before it is killed (seconds).
EXIT_WAIT_S = 10.0
#: Imported once by the fork server, so a job's process starts with them loaded; their mappings (shared
#: libraries: ~3.6 GB of address space for torch and lightning) are outside the job's memory budget. onnx and
#: onnxruntime too: mapped later, at the ONNX export, they would not fit in a small budget.
FRAMEWORK = ["torch", "lightning", "onnx", "onnxruntime"]
#: What the fork server imports: first the module that ties its life to the worker's, then this one.
PRELOAD = ["mlhub.worker._jobserver_init", __name__, *FRAMEWORK]
#: How a process dies when an allocation past RLIMIT_AS fails in native code that does not raise.
_NATIVE_OOM_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS}


class JobOutOfMemory(MlhubError):
    """The job needed more memory than MLHUB_JOB_MEMORY_MB allows: it fails, the worker goes on."""

    code = "JOB_OUT_OF_MEMORY"
    job_error_type = code


class JobProcessDied(MlhubError):
    """The job's process ended without an answer (a crash in native code, a kill from outside)."""

    code = "JOB_PROCESS_DIED"
    job_error_type = "JobProcessDied"


class JobError(Exception):
    """An error of the job's process that could not travel as itself (not picklable): its type and message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.job_error_type = error_type

    def __reduce__(self) -> tuple[Any, ...]:
        return (JobError, (self.job_error_type, str(self)))


@dataclass(frozen=True)
class JobLimits:
    """What bounds a job's process."""

    #: Address space the job may add to its process's own after torch and lightning are imported (MiB).
    memory_mb: int | None = None
    #: How long a stop request (cancel, timeout, shutdown) may take before the process is killed (seconds).
    kill_grace_s: float = 2.0


@dataclass(frozen=True)
class _ChildSpec:
    """What the child needs to build its TrainingContext (everything picklable)."""

    job: JobQueued
    attempt: int
    pool: str
    producer: str
    code_dir: Path | None
    metric_interval_s: float
    declared_metrics: frozenset[str] | None
    memory_mb: int | None
    worker_pid: int


_context_lock = threading.Lock()


def _context() -> Any:
    """The fork-server context, its preload set once."""
    with _context_lock:
        mp = multiprocessing.get_context("forkserver")
        mp.set_forkserver_preload(PRELOAD)
        return mp


def warm_up() -> None:
    """Start the fork server now (it imports torch and lightning while the worker waits for a job), so the first
    job does not wait for it. Returns at once. Call it from the thread that lives as long as the worker (its
    main thread): the server's parent-death signal fires when the thread that started it ends."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


def stop_job_server() -> None:
    """Stop the fork server (call it when the worker stops, after its last job): nothing is left behind."""
    from multiprocessing import forkserver

    server: Any = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None or not hasattr(server, "_stop"):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # it may still be importing torch; it holds no state
    with contextlib.suppress(OSError):
        server._stop()


def run_job_process(ctx: TrainingContext, limits: JobLimits) -> TrainingResult:
    """Run `train_job` for ctx in a child process and serve its requests until it ends; its result, or its
    error raised here (JobOutOfMemory, JobProcessDied, the plugin's own). Blocking: call it in a thread. The
    system metrics of the job's process are sampled meanwhile (ctx.system_metrics_s) and counted in the result's
    points_logged and metrics_delivered."""
    mp = _context()
    ours, theirs = mp.Pipe()
    stop = mp.Event()
    spec = _ChildSpec(job=ctx.job, attempt=ctx.attempt, pool=ctx.pool, producer=ctx.producer,
                      code_dir=ctx.code_dir, metric_interval_s=ctx.metric_interval_s,
                      declared_metrics=ctx.declared_metrics, memory_mb=limits.memory_mb, worker_pid=os.getpid())
    process = mp.Process(target=_child_main, args=(spec, theirs, stop), name=f"mlhub-job-{ctx.job.job_id[:8]}")
    process.start()
    theirs.close()
    assert process.pid is not None
    system = JobSystemMetrics(ctx, process.pid)
    try:
        result = _serve_child(ctx, process, ours, stop, limits)
    finally:
        # Stopped and flushed whatever way the job ended, before the worker records that: none comes after it.
        points, delivered = system.close()
    result.points_logged += points
    result.metrics_delivered = result.metrics_delivered and delivered
    return result


def _serve_child(ctx: TrainingContext, process: Any, ours: Connection, stop: Any, limits: JobLimits) -> TrainingResult:
    """Serve the child's requests until its last message (its result, or its error raised here) or its end."""
    kill_at: float | None = None
    try:
        while True:
            if ctx.stop.is_set() and kill_at is None:
                stop.set()
                kill_at = time.monotonic() + limits.kill_grace_s
            if kill_at is not None and time.monotonic() >= kill_at:
                log.warning("job %s: its process did not stop within %g s of the stop request: killed",
                            ctx.job.job_id, limits.kill_grace_s)
                process.kill()
                process.join()
                return TrainingResult(stopped=True, metrics_delivered=False)
            try:
                if not ours.poll(POLL_S):
                    if not process.is_alive() and not ours.poll(0):
                        return _died(ctx, process, limits)
                    continue
                kind, payload = ours.recv()
            except (EOFError, OSError):  # the child died mid-message
                return _died(ctx, process, limits)
            if kind == "done":
                return payload  # type: ignore[no-any-return]
            if kind == "error":
                raise payload
            answer = _serve(ctx, kind, payload)
            try:
                ours.send(answer)
            except OSError:  # the child died before it read its answer (the request itself was served)
                return _died(ctx, process, limits)
    finally:
        process.join(EXIT_WAIT_S)  # it exits right after its last message; a hung exit is killed
        if process.is_alive():
            process.kill()
            process.join()
        ours.close()


def _serve(ctx: TrainingContext, kind: str, payload: Any) -> tuple[str, Any]:
    """One request of the child, done with the worker's own callables; ("ok", answer) or ("error", exception)."""
    try:
        if kind == "publish":
            ctx.publish(payload)
            return "ok", None
        if kind == "metrics":
            ctx.send_metrics(payload)
            return "ok", None
        if kind == "put_file":
            return "ok", ctx.store.put_file(payload)
        raise ValueError(f"unknown request {kind!r} from a job process")
    except Exception as e:
        return "error", _portable(e)


def _died(ctx: TrainingContext, process: Any, limits: JobLimits) -> TrainingResult:
    """The child ended without a last message: stopped as asked, out of memory in native code, or a crash."""
    process.join()
    code = process.exitcode
    if ctx.stop.is_set():
        return TrainingResult(stopped=True, metrics_delivered=False)
    how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with {code}"
    if limits.memory_mb is not None and code is not None and code < 0 and -code in _NATIVE_OOM_SIGNALS:
        raise JobOutOfMemory(f"the job's process {how} under its memory limit of {limits.memory_mb} MiB "
                             "(MLHUB_JOB_MEMORY_MB): an allocation past the limit failed in native code")
    raise JobProcessDied(f"the job's process {how} before it ended the run")


def _portable(error: BaseException) -> BaseException:
    """The error itself when it survives pickling, else a JobError with its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return JobError(type(error).__name__, str(error) or repr(error))


def out_of_memory(error: BaseException, memory_mb: int | None) -> BaseException:
    """JobOutOfMemory for an allocation failure (Python's MemoryError, torch's allocator errors), else error."""
    text = str(error)
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and (
            "can't allocate memory" in text or "out of memory" in text.lower())):
        limit = f"its memory limit of {memory_mb} MiB (MLHUB_JOB_MEMORY_MB)" if memory_mb else "the memory it got"
        return JobOutOfMemory(f"the job needed more than {limit}: {type(error).__name__}: {text[:2000]}")
    return error


class _Channel:
    """The child's end of the pipe: one request and its answer at a time (the training and sender threads)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def request(self, kind: str, payload: Any) -> Any:
        with self.lock:
            self.conn.send((kind, payload))
            status, answer = self.conn.recv()
        if status == "error":
            raise answer
        return answer

    def publish(self, event: DomainEvent) -> None:
        self.request("publish", event)

    def send_metrics(self, envelopes: Sequence[Envelope]) -> None:
        self.request("metrics", list(envelopes))

    def last(self, kind: str, payload: Any) -> None:
        with self.lock:
            self.conn.send((kind, payload))


class _WorkerStore(ArtifactStore):
    """The worker's artifact store, seen from a job's process: files are handed over by path (same machine)."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel

    def put_file(self, path: str | os.PathLike[str]) -> StoredArtifact:
        """Store a file through the worker (it reads the file while this process waits)."""
        return self.channel.request("put_file", Path(path))  # type: ignore[no-any-return]

    def put_stream(self, source: Any) -> StoredArtifact:
        """Not offered to a job's process (training stores files only)."""
        raise NotImplementedError("a job's process stores artifacts with put_file only")

    def open(self, sha256: str) -> Any:
        """Not offered to a job's process."""
        raise NotImplementedError("a job's process does not read artifacts")

    def exists(self, sha256: str) -> bool:
        """Not offered to a job's process."""
        raise NotImplementedError("a job's process does not read artifacts")

    def uri(self, sha256: str) -> str:
        """Not offered to a job's process."""
        raise NotImplementedError("a job's process does not read artifacts")


def _child_main(spec: _ChildSpec, conn: Connection, stop: Any) -> None:
    """The job's process: limits, then train_job; its last message is ("done", result) or ("error", exc)."""
    _die_with_parent(spec.worker_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the worker, which decides
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = _Channel(conn)
    try:
        for name in FRAMEWORK:  # loaded by the fork server already (else now): the limit excludes their mappings
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        if spec.memory_mb is not None:
            _limit_address_space(spec.memory_mb)
        ctx = TrainingContext(job=spec.job, attempt=spec.attempt, pool=spec.pool, producer=spec.producer,
                              publish=channel.publish, send_metrics=channel.send_metrics,
                              store=_WorkerStore(channel), code_dir=spec.code_dir,
                              metric_interval_s=spec.metric_interval_s, declared_metrics=spec.declared_metrics)
        threading.Thread(target=_relay_stop, args=(stop, ctx.stop), daemon=True, name="mlhub-stop").start()
        result = train_job(ctx)
    except BaseException as e:
        e.__traceback__ = None  # its frames hold what filled the memory: free it before answering
        channel.last("error", _portable(out_of_memory(e, spec.memory_mb)))
    else:
        channel.last("done", result)
    with contextlib.suppress(OSError):
        conn.close()


def _relay_stop(stop: Any, into: threading.Event) -> None:
    """The worker's stop request (a process-shared event) becomes the run's (the Trainer stops after a batch)."""
    stop.wait()
    into.set()


def _limit_address_space(memory_mb: int) -> None:
    """RLIMIT_AS = this process's address space now (the framework's mappings) + memory_mb."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    limit = pages * os.sysconf("SC_PAGE_SIZE") + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _die_with_parent(worker_pid: int) -> None:
    """SIGKILL this process when its parent (the fork server, which exits with the worker) dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        os.kill(worker_pid, 0)
    except ProcessLookupError:
        os._exit(1)
