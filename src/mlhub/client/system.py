"""System metrics of a run, sampled on a daemon thread of their own: the one sampler of the SDK and the worker.

Every `interval_s` seconds (MLHUB_SYSTEM_METRICS_S, default 15; 0: none) a `SystemSampler` measures the process
that trains together with its children (data loader workers, anything it started), and hands one `SystemSample`
to its sink. The SDK samples its own process (the script), on a thread of the script; the worker samples a job's
process from the worker's process (`pid=`), so the job's process runs no sampler and its memory budget
(MLHUB_JOB_MEMORY_MB, an address-space limit) is the job's alone (mlhub.worker.jobsystem):

- `system/cpu_percent`: CPU time of the process tree over the last interval, in percent of one core (as `top`
  shows it; 250 means two and a half cores were busy). A child's first interval is not counted (psutil needs
  two readings of a process).
- `system/memory_mb`: resident memory (RSS) of the process tree in MiB (pages shared by a parent and its forked
  children are counted in each).
- `system/gpu_utilization`, `system/gpu_memory_mb`: only where an NVIDIA GPU is in use by the process tree
  (NVML through `nvidia-ml-py`, imported on the first sample): the device's utilization in percent (the mean
  over the devices in use when several are) and the GPU memory the tree's processes hold on them in MiB. No
  GPU, no driver, no NVML, a GPU used by others only, or any NVML error: no GPU keys, never an error (NVML
  reports host pids, so inside a container with a PID namespace of its own no device matches and the GPU keys
  are absent too).

Step and time: system metrics are recorded against time, as W&B and MLflow record theirs. A point's timestamp is
the moment of the sample and its step is the same number (ms since the Unix epoch): unique and increasing
across a run's attempts, resumes and processes, so the series never collides with itself or with the training
steps. Readers of "the run's last step" (a resume's next automatic step) skip the `system/` keys
(`mlhub.events.SYSTEM_METRIC_PREFIX`).

The sampler never runs on the training thread: the sink only buffers (the SDK's Run, the worker's JobMetrics: both
the one PointBatcher), and a sink that raises (a run refused, a key undeclared in reject mode) stops the sampler
with a warning, never the run. `stop()` ends the thread; the run's end calls it before the last flush. A process
that has ended (exiting with its memory released, a zombie not yet reaped, gone) is left out of a sample, and once
the sampled process itself has ended the sampler stops: nothing of it is handed to the sink.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlhub.events import SYSTEM_METRIC_PREFIX

log = logging.getLogger(__name__)

CPU_PERCENT = f"{SYSTEM_METRIC_PREFIX}cpu_percent"
MEMORY_MB = f"{SYSTEM_METRIC_PREFIX}memory_mb"
GPU_UTILIZATION = f"{SYSTEM_METRIC_PREFIX}gpu_utilization"
GPU_MEMORY_MB = f"{SYSTEM_METRIC_PREFIX}gpu_memory_mb"
#: Every key a sampler may record (each declared in configs/metrics.yaml).
SYSTEM_METRIC_KEYS = (CPU_PERCENT, MEMORY_MB, GPU_UTILIZATION, GPU_MEMORY_MB)
MIB = 1024 * 1024


@dataclass(frozen=True)
class SystemSample:
    """One sample: its values by key, taken at `timestamp_ms` (ms since the Unix epoch), which is also its step."""

    timestamp_ms: int
    values: dict[str, float] = field(default_factory=dict)

    @property
    def step(self) -> int:
        """The step of the sample's points: its wall-clock time in ms (see the module's docstring)."""
        return self.timestamp_ms


Sink = Callable[[SystemSample], None]


class ProcessTree:
    """CPU percent and RSS of one process (this one by default) and its descendants (psutil; each process kept
    for its CPU readings). psutil.NoSuchProcess when `pid` does not exist."""

    def __init__(self, pid: int | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid or os.getpid())
        self._known: dict[int, Any] = {}
        self.measure()  # the first CPU reading of each process only starts its clock

    def measure(self) -> tuple[set[int], float, float] | None:
        """(pids of the tree, CPU percent since the last call, RSS in MiB); None once the root has ended."""
        psutil = self._psutil
        try:
            members = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            members = [self.root]
        seen: dict[int, Any] = {}
        cpu = rss = 0.0
        for proc in members:
            known = self._known.get(proc.pid, proc)
            try:
                with known.oneshot():
                    # Exiting (its memory already released) or a zombie not reaped yet: it has ended.
                    resident = known.memory_info().rss
                    if not resident or known.status() == psutil.STATUS_ZOMBIE:
                        continue
                    cpu += known.cpu_percent(None)
                    rss += resident
            except psutil.Error:  # it ended between the listing and the reading
                continue
            seen[proc.pid] = known
        self._known = seen
        if self.root.pid not in seen:
            return None
        return set(seen), cpu, rss / MIB


class GpuProbe:
    """Utilization and memory of the NVIDIA devices a set of processes uses (NVML); nothing where there is none.

    NVML is loaded on the first call; when that fails (no package, no driver, no device) the probe is off for
    good. A later failure skips that one sample."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        self.off = False
        self._warned = False

    def _start(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception as e:  # ImportError, NVMLError (no driver/library), anything else: no GPU points
            log.debug("no GPU system metrics: NVML is not available (%r)", e)
            self.off = True
            return False
        if not self._handles:
            self.close()
            self.off = True
        return not self.off

    def measure(self, pids: set[int]) -> dict[str, float]:
        """GPU keys for the devices `pids` use (empty when they use none, or NVML is not there)."""
        if self.off or (self._nvml is None and not self._start()):
            return {}
        nvml = self._nvml
        utilization: list[float] = []
        memory = 0.0
        try:
            for handle in self._handles:
                ours = [p for p in (*nvml.nvmlDeviceGetComputeRunningProcesses(handle),
                                    *nvml.nvmlDeviceGetGraphicsRunningProcesses(handle)) if p.pid in pids]
                if not ours:
                    continue
                utilization.append(float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                used = [p.usedGpuMemory for p in ours if isinstance(p.usedGpuMemory, int)]
                # Without per-process figures (some drivers, MIG) the device's used memory is the best there is.
                memory += sum(used) if used else nvml.nvmlDeviceGetMemoryInfo(handle).used
        except Exception as e:
            if not self._warned:
                self._warned = True
                log.warning("GPU system metrics: NVML failed (%r); this sample has none", e)
            return {}
        if not utilization:
            return {}
        return {GPU_UTILIZATION: sum(utilization) / len(utilization), GPU_MEMORY_MB: memory / MIB}

    def close(self) -> None:
        """Shut NVML down (when it was started)."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                log.debug("nvmlShutdown failed", exc_info=True)
            self._nvml = None


class SystemSampler:
    """A daemon thread that hands a `SystemSample` of a process tree (process `pid`, this one by default) to
    `sink` every `interval_s` seconds, the first one interval after `start()`, until `stop()` or the process
    ends. `interval_s` 0 (MLHUB_SYSTEM_METRICS_S=0) starts nothing."""

    def __init__(self, sink: Sink, interval_s: float, *, name: str = "run", pid: int | None = None) -> None:
        self.sink = sink
        self.interval_s = float(interval_s)
        self.name = name
        self.pid = pid
        #: Samples and points handed to the sink so far.
        self.samples = 0
        self.points = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tree: ProcessTree | None = None
        self._gpu = GpuProbe()

    @property
    def running(self) -> bool:
        """Whether the sampler's thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SystemSampler:
        """Start sampling (nothing when interval_s is 0); returns self."""
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"mlhub-system-{self.name[:8]}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling and wait (up to timeout_s) for the thread to end; nothing is sampled after it returns."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def sample(self) -> SystemSample | None:
        """Measure now: the process tree's CPU (since the previous sample) and memory, and its GPUs if any; None
        when the process has ended."""
        if self._tree is None:
            self._tree = ProcessTree(self.pid)
        measured = self._tree.measure()
        if measured is None:
            return None
        pids, cpu, rss_mb = measured
        values = {CPU_PERCENT: cpu, MEMORY_MB: rss_mb, **self._gpu.measure(pids)}
        return SystemSample(int(time.time() * 1000), values)

    def _loop(self) -> None:
        import psutil

        try:
            self._tree = ProcessTree(self.pid)
            next_at = time.monotonic() + self.interval_s
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at += self.interval_s
                if next_at < time.monotonic():  # the process was suspended: no catching up in a burst
                    next_at = time.monotonic() + self.interval_s
                taken = self.sample()
                if taken is None or self._stop.is_set():  # it ended, or the run ended while it measured
                    break
                self.sink(taken)
                self.samples += 1
                self.points += len(taken.values)
        except psutil.NoSuchProcess:  # the process ended before the first reading: nothing to sample
            log.debug("system metrics of %s: process %s ended before it was sampled", self.name, self.pid)
        except Exception as e:  # never into training: system metrics of this run stop, the run goes on
            log.warning("system metrics of %s stopped: %s: %s", self.name, type(e).__name__, e)
        finally:
            self._gpu.close()
