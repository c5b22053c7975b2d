"""The event log client: append (dedup + optimistic concurrency), bulk append, read an aggregate, replay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamInfo

from mlhub.errors import (
    AppendRejected,
    ConcurrencyError,
    EventLogPermissionDenied,
    EventLogUnauthorized,
    EventLogUnavailable,
    EventTooLarge,
)
from mlhub.eventlog.auth import NatsAuth, permission_violation, redact_url
from mlhub.eventlog.fastnats import FastHeaderClient, stream_sequence
from mlhub.eventlog.stream import MAX_EVENT_BYTES, StreamSpec, ensure_stream
from mlhub.events import STREAM_SUBJECTS, Envelope, aggregate_subject_filter, decode, encode

if TYPE_CHECKING:
    from mlhub.settings import Settings

log = logging.getLogger(__name__)

#: JetStream error code for "wrong last sequence" (an expected-sequence check failed).
ERR_WRONG_LAST_SEQUENCE = 10071
#: Its description, which names the subject filter's last sequence as the server found it.
_WRONG_LAST = re.compile(r"wrong last sequence: (\d+)")
#: JetStream error code for "wrong last sequence" without a number: a replicated stream's leader refused a guarded
#: publish WITHOUT checking it, because an earlier guarded write to the same subject is still in flight there. The
#: leader clears that mark only after the write is applied and acknowledged, so it is often the caller's own
#: previous append, acknowledged a moment before (tools/bench/cluster.py met it on a 3-node cluster). It decides
#: nothing: the publish is sent again (same Msg-Id) until the leader checks it. One server never answers it.
ERR_LAST_SEQUENCE_IN_FLIGHT = 10164
#: JetStream error code for "atomic publish batch contains duplicate message id" (the batch was stored before).
ERR_BATCH_DUPLICATE = 10201
#: Oldest server that supports atomic batches (all of a request's events or none); per-aggregate concurrency
#: checks (Nats-Expected-Last-Subject-Sequence-Subject) need 2.11.
MIN_SERVER_VERSION = (2, 12, 0)
#: Most messages one atomic batch may hold (the server's limit).
MAX_ATOMIC_BATCH = 1000

#: The answers of a failed (or, in flight, unchecked) expected-sequence check.
_WRONG_LAST_CODES = (ERR_WRONG_LAST_SEQUENCE, ERR_LAST_SEQUENCE_IN_FLIGHT)
#: Errors after which the same message (same Msg-Id) is sent again.
_RETRYABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    asyncio.TimeoutError,
)
#: A replay pauses delivery (and flow control then holds back the server) when its buffer holds this many
#: messages or this many bytes, and resumes below half of both: memory stays bounded for big metric events
#: (a count alone let 20,000 events of 42 KB pile up) and the pipeline stays full for small ones.
_REPLAY_HIGH_WATER = 20_000
_REPLAY_HIGH_WATER_BYTES = 16 * 1024 * 1024


class Recorded(NamedTuple):
    """An event as stored: its stream sequence and its envelope."""

    seq: int
    envelope: Envelope


class StoredMessage(NamedTuple):
    """A raw stored message: sequence, subject and the exact bytes (what audit seals hash)."""

    seq: int
    subject: str
    data: bytes


@dataclass(frozen=True)
class AppendResult:
    """Where an appended event is stored; duplicate is true when it was already stored before."""

    seq: int
    duplicate: bool = False


@dataclass(frozen=True)
class AggregateEvents:
    """Every event of one aggregate in order, and its version (the stream sequence of its last event)."""

    events: list[Recorded]
    version: int


class EventLog:
    """The append-only event log on NATS JetStream.

    Constructing it does no I/O; `await connect()` connects and checks the server, `await ensure_stream()`
    creates or checks the stream. Use `async with EventLog(url) as log:` for both and a clean close.
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        spec: StreamSpec | None = None,
        ack_timeout_s: float = 5.0,
        append_deadline_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        ping_interval_s: float = 5.0,
        name: str = "mlhub",
        auth: NatsAuth | None = None,
    ) -> None:
        self.servers = [s.strip() for s in servers.split(",")] if isinstance(servers, str) else list(servers)
        self.auth = auth or NatsAuth()
        self.spec = spec or StreamSpec()
        self.ack_timeout_s = ack_timeout_s
        self.append_deadline_s = append_deadline_s
        self.connect_timeout_s = connect_timeout_s
        self.ping_interval_s = ping_interval_s
        self.name = name
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._closing = False
        # Tasks waiting for an answer to a publish on a subject, so a permissions violation the server reports
        # (asynchronously, it sends no answer) fails them at once instead of after every retry.
        self._waiting: dict[str, set[asyncio.Task[Any]]] = {}
        self._denied: dict[asyncio.Task[Any], str] = {}
        self._moved_at = 0.0  # when _leave_a_silent_server last moved to another server

    @classmethod
    def from_settings(cls, servers: str, settings: Settings, *, name: str) -> EventLog:
        """The event log as the settings describe it: stream spec, time-outs, credentials and TLS."""
        spec = StreamSpec(replicas=settings.stream_replicas, duplicate_window_s=settings.duplicate_window_s)
        return cls(servers, spec=spec, name=name, ack_timeout_s=settings.ack_timeout_s,
                   append_deadline_s=settings.append_deadline_s, ping_interval_s=settings.nats_ping_interval_s,
                   auth=NatsAuth.from_settings(settings))

    @property
    def where(self) -> str:
        """The servers, without any user or password (for messages)."""
        return ", ".join(redact_url(s) for s in self.servers)

    # -- connection ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> EventLog:
        await self.connect()
        await self.ensure_stream()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect (retrying until connect_timeout_s) and check the server supports what mlhub needs.

        Credentials the server refuses (none, or wrong ones) raise EventLogUnauthorized at once."""
        deadline = time.monotonic() + self.connect_timeout_s
        last_error: Exception | None = None
        options = self.auth.connect_options()
        while time.monotonic() < deadline:
            nc = FastHeaderClient()
            refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

            async def on_connect_error(e: Exception, refused: asyncio.Future[Exception] = refused) -> None:
                if _is_auth_error(e) and not refused.done():
                    refused.set_result(e)
                await self._on_error(e)

            connecting = asyncio.ensure_future(nc.connect(
                servers=self.servers,
                name=self.name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.1,  # type: ignore[arg-type]  # float works: it is a sleep
                connect_timeout=min(2.0, self.connect_timeout_s),  # type: ignore[arg-type]
                pending_size=64 * 1024 * 1024,
                # A server that stops answering (its host cut off, not closed) is noticed after two missed
                # pings and the client moves to another server of the cluster; nats-py's default of 120 s
                # would leave it waiting on the dead connection for up to 4 minutes.
                ping_interval=self.ping_interval_s,  # type: ignore[arg-type]  # float works: it is a sleep
                max_outstanding_pings=2,
                error_cb=on_connect_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                **options,
            ))
            try:
                # nats-py keeps retrying a first connect forever when reconnects are unlimited: bound it here.
                await asyncio.wait([connecting, cast(asyncio.Future[Any], refused)],
                                   timeout=max(0.1, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
                if refused.done():
                    raise EventLogUnauthorized(
                        f"the NATS server at {self.where} refused the connection {self.auth.describe(self.servers)}: "
                        f"{_error_text(refused.result())}; set MLHUB_NATS_CREDS to a credentials file of a user "
                        "of that server (see docs/deploy.md)")
                if not connecting.done():
                    raise TimeoutError("no connection")
                connecting.result()
                self._nc = nc
                break
            except EventLogUnauthorized:
                connecting.cancel()
                with contextlib.suppress(Exception):
                    await nc.close()
                raise
            except Exception as e:  # nats raises several unrelated types for "could not connect"
                last_error = e
                connecting.cancel()
                with contextlib.suppress(Exception):
                    await nc.close()
                await asyncio.sleep(0.1)
        else:
            raise EventLogUnavailable(
                f"cannot connect to NATS at {self.where} within {self.connect_timeout_s:g}s: "
                f"{_error_text(last_error)}"
            )
        info = self._nc._server_info  # the INFO the server sent on connect
        version = str(info.get("version", "0.0.0"))
        if _parse_version(version) < MIN_SERVER_VERSION or not info.get("jetstream"):
            url = self._connected_where()
            await self.close()
            raise EventLogUnavailable(
                f"nats-server {version} at {url} cannot hold the mlhub event log: it needs JetStream and "
                f"version >= {'.'.join(map(str, MIN_SERVER_VERSION))} "
                "(atomic batches and per-aggregate concurrency checks)"
            )
        self._js = self._nc.jetstream(timeout=self.ack_timeout_s)

    async def close(self) -> None:
        """Flush and close the connection."""
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except Exception:  # closing anyway
                await self._nc.close()
        self._nc = None
        self._js = None

    async def _on_error(self, e: Exception) -> None:
        violation = permission_violation(str(e))
        if violation is None:
            log.debug("nats error: %r", e)
            return
        kind, subject = violation
        log.error("event log: the NATS server denied this connection (%s) %s to %r",
                  self.auth.describe(self.servers), kind, subject)
        if kind == "publish":
            for task in self._waiting.get(subject.lower(), ()):
                if task not in self._denied:
                    self._denied[task] = subject
                    task.cancel()

    @contextlib.contextmanager
    def permission_guard(self, subjects: Iterable[str], what: str) -> Iterator[None]:
        """Inside: a publish on one of `subjects` that the server denies raises EventLogPermissionDenied at
        once (the server answers a denied request with nothing; without this it would time out and retry)."""
        task = asyncio.current_task()
        assert task is not None
        # nats-py hands the server's error text over lowercased: subjects are matched without case.
        watched = {subject.lower(): subject for subject in subjects}
        for subject in watched:
            self._waiting.setdefault(subject, set()).add(task)
        try:
            yield
        except asyncio.CancelledError:
            denied = self._denied.pop(task, None)
            if denied is None:
                raise
            task.uncancel()
            raise EventLogPermissionDenied(
                f"the event log refused {what}: the NATS server at {self.where} does not let this connection "
                f"({self.auth.describe(self.servers)}) publish to {watched.get(denied, denied)!r} (permissions "
                "violation); nothing was stored") from None
        finally:
            for subject in watched:
                waiting = self._waiting.get(subject)
                if waiting is not None:
                    waiting.discard(task)
                    if not waiting:
                        del self._waiting[subject]
            self._denied.pop(task, None)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("event log: disconnected from NATS, reconnecting")

    async def _on_reconnected(self) -> None:
        log.warning("event log: reconnected to NATS")

    def _connected_where(self) -> str:
        """The server this client is connected to, host:port without user information (else the servers)."""
        url = self._nc.connected_url if self._nc is not None else None
        return url.netloc.rsplit("@", 1)[-1] if url else self.where

    @property
    def silent_after_s(self) -> float:
        """How long a server of a cluster may leave appends and reads unanswered before this client moves to
        another one (two ping intervals, at least one acknowledgement time-out)."""
        return max(2 * self.ping_interval_s, self.ack_timeout_s)

    async def _leave_a_silent_server(self, failing_since: float) -> None:
        """Move to another server of the cluster when the one this client is connected to has not answered for
        silent_after_s. A server cut off from the others (the minority of a partition) still answers pings, so
        the connection looks healthy, but it cannot store anything: its stream replica has no quorum, and its
        routes to the majority are gone or dead. nats-py's reconnect takes the next server of its pool (the
        configured ones and those the cluster announced); one move per silent_after_s for all callers."""
        nc = self._nc
        now = time.monotonic()
        if (nc is None or len(nc.servers) < 2 or now - failing_since < self.silent_after_s
                or now - self._moved_at < self.silent_after_s or not nc.is_connected):
            return
        self._moved_at = now
        log.warning("event log: %s has not stored or answered for %.0f s (cut off from its cluster?): moving to "
                    "another server", self._connected_where(), now - failing_since)
        await nc.force_reconnect()

    @property
    def nc(self) -> NatsClient:
        """The underlying NATS connection (for tools and tests; prefer the methods of this class)."""
        if self._nc is None:
            raise EventLogUnavailable("event log is not connected: call connect() first")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context of the connection."""
        if self._js is None:
            raise EventLogUnavailable("event log is not connected: call connect() first")
        return self._js

    async def ensure_stream(self) -> StreamInfo:
        """Create the stream or check the existing one's settings (StreamConfigConflict names a mismatch)."""
        api = "$JS.API.STREAM"
        with self.permission_guard([f"{api}.{op}.{self.spec.name}" for op in ("INFO", "CREATE", "UPDATE")],
                                   f"the setup of the stream {self.spec.name}"):
            return await ensure_stream(self.js, self.spec)

    async def last_sequence(self, subject_filter: str | None = None) -> int:
        """The stream sequence of the last event (of those matching subject_filter); 0 when there is none."""
        if subject_filter is None or subject_filter == STREAM_SUBJECTS:
            info = await self.js.stream_info(self.spec.name)
            return int(info.state.last_seq)
        msg = await self._direct_get({"last_by_subj": subject_filter})
        return 0 if msg is None else _direct_seq(msg)

    async def last_stored_at(self, subject_filter: str) -> tuple[int, datetime] | None:
        """The sequence and the server's store time of the last message matching subject_filter (None when
        there is none); the time is the stream's own clock, not a producer's."""
        msg = await self._direct_get({"last_by_subj": subject_filter})
        if msg is None:
            return None
        stamp = (msg.headers or {}).get("Nats-Time-Stamp", "")
        return _direct_seq(msg), _parse_stamp(stamp)

    async def last_event(self, subject_filter: str) -> Recorded | None:
        """The last event matching subject_filter (wildcards allowed), decoded; None when there is none."""
        msg = await self._direct_get({"last_by_subj": subject_filter})
        return None if msg is None else Recorded(_direct_seq(msg), decode(msg.data))

    # -- appending ----------------------------------------------------------------------------------------

    async def append(self, envelope: Envelope, *, expected_version: int | None = None,
                     encoded: bytes | None = None) -> AppendResult:
        """Append one event; stored once however often it is retried (its event id is the Nats-Msg-Id).

        expected_version: the aggregate's version the caller decided on (the stream sequence of its last
        event, 0 for a new aggregate). If another event of the aggregate was appended since, raises
        ConcurrencyError and stores nothing. A retry after a lost acknowledgement is recognized.
        """
        data = encoded if encoded is not None else self.encode_event(envelope)
        # Only the Msg-Id (and the expected-sequence pair) travel: every header is stored with the event and
        # parsed again on every replay. (An expected-stream header is not needed: streams cannot overlap.)
        headers = {"Nats-Msg-Id": str(envelope.event_id)}
        if expected_version is not None:
            if expected_version < 0:
                raise ValueError(f"expected_version must be >= 0, got {expected_version}")
            aggregate = aggregate_subject_filter(envelope.aggregate_type, envelope.aggregate_id)
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_version)
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = aggregate
        with self.permission_guard([envelope.subject], f"{envelope.type} {envelope.event_id}"):
            resp = await self._until_checked(lambda: self._publish(envelope.subject, data, headers))
        error = resp.get("error")
        if error is None:
            return AppendResult(seq=int(resp["seq"]), duplicate=bool(resp.get("duplicate", False)))
        if error.get("err_code") in _WRONG_LAST_CODES and expected_version is not None:
            return await self._resolve_conflict(envelope, expected_version)
        raise AppendRejected(f"{envelope.type} {envelope.event_id} rejected by the event log: {error}")

    async def append_many(
        self, envelopes: Iterable[Envelope], *, max_in_flight: int = 64
    ) -> list[AppendResult]:
        """Append many independent events (e.g. metric batches), pipelined with at most max_in_flight unacked.

        Every acknowledgement is awaited with a timeout; a lost one is retried with the same event id, so
        each event is stored exactly once. Order among the events is not guaranteed when retries happen:
        use it for events whose order does not matter (metric points carry their own step).
        """
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        window = asyncio.Semaphore(max_in_flight)
        tasks: list[asyncio.Task[AppendResult]] = []
        failed = False

        async def one(envelope: Envelope) -> AppendResult:
            nonlocal failed
            try:
                return await self.append(envelope)
            except BaseException:
                failed = True  # stop submitting more; gather() below raises this error
                raise
            finally:
                window.release()

        try:
            for envelope in envelopes:
                await window.acquire()
                if failed:
                    break
                tasks.append(asyncio.create_task(one(envelope)))
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def append_atomic(
        self, envelopes: Sequence[Envelope], *, guards: dict[int, tuple[str, int]] | None = None,
        encoded: Sequence[bytes | None] | None = None,
    ) -> list[AppendResult]:
        """Append events as one atomic batch: every one is stored, contiguously and in order, or none is.

        guards: index in `envelopes` -> (subject filter, expected last sequence of that filter, 0 = none yet),
        e.g. {0: ("mlhub.ev.run.<id>.>", version)}; checked by the server before anything is stored, against
        the stream as it was before the batch. One that fails raises ConcurrencyError and stores nothing.
        A batch stored before (a retry after a lost acknowledgement: same event ids) is recognized and answered
        with duplicate=True. At most MAX_ATOMIC_BATCH events. One event is a plain (guarded) append.
        `encoded`: the envelopes' wire forms made beforehand with `encode_event` (None where not), so a caller
        can do that CPU work outside a lock it holds around the append.

        Atomic batches cost the server more than single appends (nats-server stages them before the commit;
        ~5 ms each on 2 vCPU): use them for what one request must store together, not for bulk ingest.
        """
        if not envelopes:
            return []
        guards = guards or {}
        wire = list(encoded) if encoded is not None else [None] * len(envelopes)
        if len(wire) != len(envelopes):
            raise ValueError(f"{len(wire)} encoded forms for {len(envelopes)} envelopes")
        if len(envelopes) > MAX_ATOMIC_BATCH:
            raise AppendRejected(f"{len(envelopes)} events in one atomic batch; the event log takes "
                                 f"{MAX_ATOMIC_BATCH} at most")
        if len(envelopes) == 1 and set(guards) <= {0}:
            guard = guards.get(0)
            if guard is None:
                return [await self.append(envelopes[0], encoded=wire[0])]
            aggregate = aggregate_subject_filter(envelopes[0].aggregate_type, envelopes[0].aggregate_id)
            if guard[0] == aggregate:
                return [await self.append(envelopes[0], expected_version=guard[1], encoded=wire[0])]
        messages: list[tuple[str, bytes, dict[str, str]]] = []
        for index, envelope in enumerate(envelopes):
            headers = {"Nats-Msg-Id": str(envelope.event_id)}
            if index in guards:
                subject_filter, expected = guards[index]
                if expected < 0:
                    raise ValueError(f"expected sequence must be >= 0, got {expected}")
                headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
                headers["Nats-Expected-Last-Subject-Sequence-Subject"] = subject_filter
            data = wire[index]
            messages.append((envelope.subject, data if data is not None else self.encode_event(envelope), headers))
        with self.permission_guard([m[0] for m in messages],
                                   f"an atomic batch of {len(envelopes)} events ({envelopes[0].type} ...)"):
            resp = await self._until_checked(lambda: self._publish_batch(messages))
        error = resp.get("error")
        if error is None:
            last = int(resp["seq"])
            first = last - len(messages) + 1
            return [AppendResult(seq=first + i) for i in range(len(messages))]
        if error.get("err_code") == ERR_BATCH_DUPLICATE:
            # Stored before, whole (a batch is atomic): a retry. Its sequences are not in the answer; the last
            # event's subject's last sequence is at or after them, which is what read-your-writes needs.
            seq = await self.last_sequence(envelopes[-1].subject)
            return [AppendResult(seq=seq, duplicate=True) for _ in envelopes]
        if error.get("err_code") in _WRONG_LAST_CODES and guards:
            # With one guard the server's "wrong last sequence: N" is that filter's last sequence now.
            found = _WRONG_LAST.search(str(error.get("description", ""))) if len(guards) == 1 else None
            raise ConcurrencyError(
                f"an atomic batch of {len(envelopes)} events ({envelopes[0].type} ...) was refused: "
                f"{error.get('description')}; another writer appended first: read again and retry",
                expected=next(iter(guards.values()))[1] if len(guards) == 1 else None,
                actual=int(found.group(1)) if found else None)
        raise AppendRejected(f"an atomic batch of {len(envelopes)} events ({envelopes[0].type} ...) was rejected "
                             f"by the event log: {error}")

    async def _publish_batch(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> dict[str, Any]:
        """Publish an atomic batch and wait for the commit's acknowledgement. A lost one is retried as a new
        batch with the same Msg-Ids (the server answers ERR_BATCH_DUPLICATE when the first one was stored)."""

        async def send() -> Msg:
            batch_id = uuid.uuid4().hex
            for number, (subject, data, headers) in enumerate(messages[:-1], 1):
                await self.nc.publish(subject, data, headers={**headers, "Nats-Batch-Id": batch_id,
                                                              "Nats-Batch-Sequence": str(number)})
            subject, data, headers = messages[-1]
            return await self.nc.request(subject, data, timeout=self.ack_timeout_s, headers={
                **headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(len(messages)),
                "Nats-Batch-Commit": "1"})

        return await self._until_acknowledged(send, f"an atomic batch of {len(messages)}")

    async def _until_checked(self, publish: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """The stream's answer to a guarded publish, sent again while the leader answers
        ERR_LAST_SEQUENCE_IN_FLIGHT (checked nothing), for as long as one acknowledgement may take; a last such
        answer is then treated as the conflict it may be (the caller reads the aggregate again)."""
        deadline = time.monotonic() + self.ack_timeout_s
        delay = 0.005
        while True:
            resp = await publish()
            error = resp.get("error")
            if error is None or error.get("err_code") != ERR_LAST_SEQUENCE_IN_FLIGHT or \
                    time.monotonic() + delay > deadline:
                return resp
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def encode_event(self, envelope: Envelope) -> bytes:
        """An envelope's wire form, EventTooLarge when it is over the largest message the log takes."""
        data = encode(envelope)
        if len(data) > MAX_EVENT_BYTES:
            raise EventTooLarge(
                f"{envelope.type} {envelope.event_id} is {len(data)} bytes, more than the {MAX_EVENT_BYTES} a "
                f"single event may hold: split the batch"
            )
        return data

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """Publish and wait for the stream's acknowledgement, retrying the same message until the deadline."""
        return await self._until_acknowledged(
            lambda: self.nc.request(subject, data, timeout=self.ack_timeout_s, headers=dict(headers)), subject)

    async def _until_acknowledged(self, send: Callable[[], Awaitable[Msg]], what: str) -> dict[str, Any]:
        """The stream's answer to `send()`, sending again (the same message ids) after a lost connection, a
        time-out or a 503 (JetStream, or the stream's leader, not ready yet: e.g. just after a restart) until
        MLHUB_APPEND_DEADLINE_S, then EventLogUnavailable."""
        started = time.monotonic()
        deadline = started + self.append_deadline_s
        delay = 0.05
        while True:
            try:
                resp: dict[str, Any] = json.loads((await send()).data)
                error = resp.get("error")
                if error is None or error.get("code") != 503:
                    return resp
                problem: Exception = EventLogUnavailable(str(error))
            except _RETRYABLE as e:
                problem = e
            except nats.errors.ConnectionClosedError as e:
                raise EventLogUnavailable(f"connection to NATS is closed: {e!r}") from e
            if time.monotonic() + delay > deadline:
                raise EventLogUnavailable(
                    f"no acknowledgement for {what} within {self.append_deadline_s:g}s: {problem!r}") from problem
            await self._leave_a_silent_server(started)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _resolve_conflict(self, envelope: Envelope, expected_version: int) -> AppendResult:
        """After a failed expected-sequence check: did our own earlier try win (lost ack), or someone else?

        The first event of the aggregate after expected_version is the one that won the race; if its
        Nats-Msg-Id is our event id, our append is stored and this is a retry.
        """
        aggregate = aggregate_subject_filter(envelope.aggregate_type, envelope.aggregate_id)
        winner = await self._direct_get({"seq": expected_version + 1, "next_by_subj": aggregate})
        if winner is not None and (winner.headers or {}).get("Nats-Msg-Id") == str(envelope.event_id):
            return AppendResult(seq=_direct_seq(winner), duplicate=True)
        actual = await self.last_sequence(aggregate)
        raise ConcurrencyError(
            f"{envelope.aggregate_type} {envelope.aggregate_id} is at version {actual}, not the expected "
            f"{expected_version}: another writer appended first; read it again and retry",
            expected=expected_version,
            actual=actual,
        )

    async def _direct_get(self, request: dict[str, Any]) -> Msg | None:
        """A direct get from the stream (works with wildcard subjects); None when no message matches."""
        subject = f"$JS.API.DIRECT.GET.{self.spec.name}"
        started = time.monotonic()
        deadline = started + self.append_deadline_s
        while True:
            try:
                with self.permission_guard([subject], f"a direct get from {self.spec.name}"):
                    msg = await self.nc.request(subject, json.dumps(request).encode(), timeout=self.ack_timeout_s)
            except _RETRYABLE as e:
                if time.monotonic() > deadline:
                    raise EventLogUnavailable(f"direct get from {self.spec.name} failed: {e!r}") from e
                await self._leave_a_silent_server(started)
                await asyncio.sleep(0.1)
                continue
            status = (msg.headers or {}).get("Status")
            if status == "404":
                return None
            if status:
                raise EventLogUnavailable(f"direct get {request} failed: {status} {msg.headers}")
            return msg

    # -- reading ------------------------------------------------------------------------------------------

    async def find_events(self, subject_filter: str, event_ids: Iterable[str], *,
                          from_seq: int = 1) -> dict[str, Recorded]:
        """The stored events among `event_ids` under subject_filter (from from_seq on), decoded, by event id.
        Only matching messages are decoded (the event id leads every stored message)."""
        wanted = {str(i) for i in event_ids}
        found: dict[str, Recorded] = {}
        if not wanted or await self.last_sequence(subject_filter) < from_seq:
            return found
        async with contextlib.aclosing(self.replay_batches(from_seq, subject_filter=subject_filter)) as batches:
            async for batch in batches:
                for stored in batch:
                    head = stored.data[:64]
                    if any(i.encode() in head for i in wanted - found.keys()):
                        recorded = Recorded(stored.seq, decode(stored.data))
                        if str(recorded.envelope.event_id) in wanted:
                            found[str(recorded.envelope.event_id)] = recorded
                if len(found) == len(wanted):
                    break
        return found

    async def read_aggregate(self, aggregate_type: str, aggregate_id: str) -> AggregateEvents:
        """Every event of one aggregate, upcast to the current classes, and the aggregate's version."""
        subject = aggregate_subject_filter(aggregate_type, aggregate_id)
        version = await self.last_sequence(subject)
        events = [r async for r in self.replay(subject_filter=subject, until_seq=version)] if version else []
        return AggregateEvents(events=events, version=version)

    async def replay(
        self,
        from_seq: int = 1,
        *,
        subject_filter: str = STREAM_SUBJECTS,
        until_seq: int | None = None,
        follow: bool = False,
    ) -> AsyncGenerator[Recorded, None]:
        """Events from from_seq on, in stream order, as (sequence, envelope), upcast to the current classes.

        Stops at until_seq, or at the last event stored when the replay began, unless follow is true (then
        it waits for new events until the caller stops iterating).
        """
        async for batch in self.replay_batches(
            from_seq, subject_filter=subject_filter, until_seq=until_seq, follow=follow
        ):
            for stored in batch:
                yield Recorded(stored.seq, decode(stored.data))

    async def replay_raw(
        self,
        from_seq: int = 1,
        *,
        subject_filter: str = STREAM_SUBJECTS,
        until_seq: int | None = None,
        follow: bool = False,
    ) -> AsyncGenerator[StoredMessage, None]:
        """Like replay, but the stored bytes undecoded (for audits and tools that must see exact bytes)."""
        async for batch in self.replay_batches(
            from_seq, subject_filter=subject_filter, until_seq=until_seq, follow=follow
        ):
            for stored in batch:
                yield stored

    async def replay_batches(
        self,
        from_seq: int = 1,
        *,
        subject_filter: str = STREAM_SUBJECTS,
        until_seq: int | None = None,
        follow: bool = False,
        max_batch: int = 1000,
        max_batch_bytes: int = 4 * 1024 * 1024,
    ) -> AsyncGenerator[list[StoredMessage], None]:
        """Stored messages in stream order, in batches of whatever has arrived (at most max_batch messages and,
        past the first message, about max_batch_bytes: a batch of 1,000 metric events would decode to ~100 MB).

        An ordered push consumer (ephemeral, no acks, flow-controlled, reset by the client on a gap) delivers
        into a callback that only buffers; the buffer is bounded by pausing the callback, which in turn
        holds back the server through flow control. This is the fast path projectors use.
        """
        if from_seq < 1:
            raise ValueError(f"from_seq must be >= 1, got {from_seq}")
        end = until_seq
        if end is None and not follow:
            end = await self.last_sequence(subject_filter)
        if end is not None and end < from_seq:
            return
        buffer: deque[StoredMessage] = deque()
        buffered_bytes = 0
        arrived = asyncio.Event()
        room = asyncio.Event()
        room.set()

        async def on_message(msg: Msg) -> None:
            nonlocal buffered_bytes
            buffer.append(StoredMessage(stream_sequence(msg.reply), msg.subject, msg.data))
            buffered_bytes += len(msg.data)
            arrived.set()
            if len(buffer) >= _REPLAY_HIGH_WATER or buffered_bytes >= _REPLAY_HIGH_WATER_BYTES:
                room.clear()
                await room.wait()

        with self.permission_guard([f"$JS.API.CONSUMER.CREATE.{self.spec.name}"], f"a replay of {subject_filter}"):
            sub = await self._subscribe_ordered(subject_filter, from_seq, on_message)
        try:
            while True:
                while not buffer:
                    arrived.clear()
                    await arrived.wait()
                batch: list[StoredMessage] = []
                batch_bytes = 0
                while buffer and len(batch) < max_batch and batch_bytes < max_batch_bytes:
                    batch.append(buffer.popleft())
                    batch_bytes += len(batch[-1].data)
                buffered_bytes -= batch_bytes
                if len(buffer) < _REPLAY_HIGH_WATER // 2 and buffered_bytes < _REPLAY_HIGH_WATER_BYTES // 2:
                    room.set()
                if end is not None and batch[-1].seq >= end:
                    yield [m for m in batch if m.seq <= end]
                    return
                yield batch
        finally:
            room.set()
            try:
                await sub.unsubscribe()
            except Exception as e:  # the connection may already be gone; the consumer is ephemeral
                log.debug("unsubscribe after replay failed: %r", e)

    async def _subscribe_ordered(self, subject_filter: str, from_seq: int,
                                 on_message: Callable[[Msg], Awaitable[None]]) -> Any:
        """An ordered push consumer from from_seq on, delivering into on_message. Its creation is asked again
        while the server says JetStream is not ready (503: e.g. during a leader election, or on a server cut off
        from its cluster) or does not answer, until MLHUB_APPEND_DEADLINE_S, then EventLogUnavailable."""
        started = time.monotonic()
        while True:
            try:
                return await self.js.subscribe(
                    subject_filter,
                    stream=self.spec.name,
                    cb=on_message,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    config=ConsumerConfig(opt_start_seq=from_seq),
                    # nats-py's own queue ahead of the callback (reaching these limits would drop messages, and the
                    # ordered consumer would start over from the gap).
                    pending_msgs_limit=1_000_000,
                    pending_bytes_limit=512 * 1024 * 1024,
                    idle_heartbeat=2.0,
                )
            except (*_RETRYABLE, nats.js.errors.ServiceUnavailableError) as e:
                if time.monotonic() - started > self.append_deadline_s:
                    raise EventLogUnavailable(f"a replay of {subject_filter} could not start within "
                                              f"{self.append_deadline_s:g}s: {_error_text(e)}") from e
                await self._leave_a_silent_server(started)
                await asyncio.sleep(0.2)


def _is_auth_error(e: BaseException) -> bool:
    """True for the server's refusal of a connection's credentials (retrying with them cannot help)."""
    text = str(e).lower()
    return isinstance(e, nats.errors.AuthorizationError) or "authorization violation" in text or (
        "authentication" in text and ("expired" in text or "revoked" in text))


def _error_text(e: BaseException | None) -> str:
    """An error for a message, without any user or password a URL in it might carry."""
    if e is None:
        return "no answer"
    return re.sub(r"(\w+://)[^/@\s]*@", r"\1", f"{type(e).__name__}: {e}" if str(e) else repr(e))


def _direct_seq(msg: Msg) -> int:
    """The stream sequence of a message fetched by direct get (the server sets Nats-Sequence)."""
    return int((msg.headers or {})["Nats-Sequence"])


def _parse_stamp(stamp: str) -> datetime:
    """A Nats-Time-Stamp header (RFC 3339 with nanoseconds, UTC) as an aware datetime."""
    text = stamp.strip().replace("Z", "+00:00")
    if "." in text:  # Python takes at most 6 fraction digits
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):] or "+00:00"
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text).astimezone(UTC)


def _parse_version(version: str) -> tuple[int, int, int]:
    parts = (version.split("-", 1)[0].split(".") + ["0", "0", "0"])[:3]
    try:
        return (int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        return (0, 0, 0)
