"""Audit seals: a hash over each range of the stream, chained, so bytes altered behind the server are found.

Seal k covers the stored messages first_seq..last_seq (contiguous with seal k-1's range; the first seal starts
at 1) and records `digest = sha256("mlhub-seal-v1" | previous digest | for each message: seq, subject, data)`.
The seal itself is an event (`audit.sealed`, appended with an expected-version check on the `audit/seals`
aggregate, so two sealers never fork the chain); it lies in the stream and is covered by the next seal.

`verify_seals` recomputes every seal from the stored bytes. An altered, missing or inserted message inside a
sealed range changes its digest; an altered seal breaks the chain or the next seal's digest. Events after the
last seal are not covered yet (reported as the unsealed tail); the last seal's digest is printed by
`mlhub audit verify` so it can be anchored outside the system.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlhub.errors import ConcurrencyError, EventDecodeError
from mlhub.eventlog.client import EventLog, StoredMessage
from mlhub.events import AuditSealed, Envelope, aggregate_subject_filter, decode

log = logging.getLogger(__name__)

ALGORITHM = "sha256-chain-v1"
SEALS_FILTER = aggregate_subject_filter("audit", "seals")
_DOMAIN = b"mlhub-seal-v1\x00"


class SealHasher:
    """Incremental digest of one sealed range (see the module docstring for the exact byte layout)."""

    def __init__(self, previous_digest: str | None) -> None:
        self._hash = hashlib.sha256(_DOMAIN)
        self._hash.update(bytes.fromhex(previous_digest) if previous_digest else bytes(32))
        self.count = 0

    def update(self, message: StoredMessage) -> None:
        """Add one stored message."""
        subject = message.subject.encode()
        self._hash.update(struct.pack(">QI", message.seq, len(subject)))
        self._hash.update(subject)
        self._hash.update(struct.pack(">Q", len(message.data)))
        self._hash.update(message.data)
        self.count += 1

    def hexdigest(self) -> str:
        """The digest so far."""
        return self._hash.hexdigest()


def seal_digest(previous_digest: str | None, messages: Iterable[StoredMessage]) -> tuple[str, int]:
    """The digest over messages chained to previous_digest, and how many messages it covers."""
    hasher = SealHasher(previous_digest)
    for message in messages:
        hasher.update(message)
    return hasher.hexdigest(), hasher.count


async def last_seal(event_log: EventLog) -> AuditSealed | None:
    """The newest seal in the stream, or None."""
    recorded = await event_log.last_event(SEALS_FILTER)
    if recorded is None:
        return None
    event = recorded.envelope.event
    if not isinstance(event, AuditSealed):
        raise EventDecodeError(f"message {recorded.seq} on {SEALS_FILTER} is {recorded.envelope.type}, not a seal")
    return event


async def seal(event_log: EventLog, *, producer: str, up_to: int | None = None, min_messages: int = 1) -> (
        AuditSealed | None):
    """Seal the stream from after the last seal up to `up_to` (default: the last stored message).

    Returns the new seal, or None when fewer than min_messages are unsealed or another sealer won the race.
    """
    version = await event_log.last_sequence(SEALS_FILTER)
    previous = await last_seal(event_log)
    first = previous.last_seq + 1 if previous else 1
    last = up_to if up_to is not None else await event_log.last_sequence()
    if last - first + 1 < min_messages:
        return None
    hasher = SealHasher(previous.digest if previous else None)
    expected_seq = first
    async for message in event_log.replay_raw(first, until_seq=last):
        if message.seq != expected_seq:
            raise EventDecodeError(f"stream has no message {expected_seq} (next is {message.seq}): cannot seal")
        hasher.update(message)
        expected_seq += 1
    event = AuditSealed(first_seq=first, last_seq=last, message_count=hasher.count, digest=hasher.hexdigest(),
                        previous_digest=previous.digest if previous else None)
    try:
        await event_log.append(Envelope(event=event, producer=producer), expected_version=version)
    except ConcurrencyError:
        return None  # another sealer appended a seal meanwhile; the next round continues from it
    return event


async def run_sealer(event_log: EventLog, *, producer: str, interval_s: float, stop: asyncio.Event,
                     min_messages: int = 1) -> None:
    """Seal every interval_s until stop is set (a seal also covers the previous seal event)."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return
        try:
            sealed = await seal(event_log, producer=producer, min_messages=min_messages)
        except Exception as e:  # keep sealing later; the projectors must not stop for this
            log.warning("audit seal failed: %r", e)
            continue
        if sealed:
            log.info("sealed messages %d..%d: %s", sealed.first_seq, sealed.last_seq, sealed.digest)


@dataclass
class SealReport:
    """What verify_seals found: seals checked, every problem named, and the unsealed tail."""

    seals: int = 0
    sealed_through: int = 0
    last_digest: str | None = None
    unsealed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every seal matched."""
        return not self.problems


async def verify_seals(event_log: EventLog) -> SealReport:
    """Recompute every seal from the stored bytes and check the chain."""
    report = SealReport()
    seals: list[tuple[int, AuditSealed]] = []
    async for stored in event_log.replay_raw(subject_filter=SEALS_FILTER):
        try:
            event = decode(stored.data).event
        except EventDecodeError as e:
            report.problems.append(f"seal message {stored.seq} is unreadable (altered?): {e}")
            continue
        if isinstance(event, AuditSealed):
            seals.append((stored.seq, event))
    previous: AuditSealed | None = None
    for seq, s in seals:
        want_first = previous.last_seq + 1 if previous else 1
        if s.first_seq != want_first or s.previous_digest != (previous.digest if previous else None):
            report.problems.append(f"seal at message {seq} does not continue the chain: covers "
                                   f"{s.first_seq}..{s.last_seq}, expected to start at {want_first} after digest "
                                   f"{previous.digest if previous else None}")
        previous = s
    last_stream_seq = await event_log.last_sequence()
    if seals:
        await _check_ranges(event_log, [s for _, s in seals], report)
        report.sealed_through = seals[-1][1].last_seq
        report.last_digest = seals[-1][1].digest
    report.seals = len(seals)
    report.unsealed = last_stream_seq - report.sealed_through
    return report


async def _check_ranges(event_log: EventLog, seals: list[AuditSealed], report: SealReport) -> None:
    """One pass over the sealed part of the stream, recomputing each seal's digest over its range."""
    index = 0
    current = seals[0]
    hasher = SealHasher(current.previous_digest)
    expected_seq = current.first_seq
    missing: list[int] = []

    def close_range() -> None:
        digest = hasher.hexdigest()
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            report.problems.append(f"seal {current.first_seq}..{current.last_seq}: messages missing: {shown}")
        if digest != current.digest or hasher.count != current.message_count:
            report.problems.append(
                f"seal {current.first_seq}..{current.last_seq}: stored messages hash to {digest} "
                f"({hasher.count} messages), the seal recorded {current.digest} ({current.message_count}): "
                f"a message in this range was altered, removed or inserted"
            )

    async for message in event_log.replay_raw(current.first_seq, until_seq=seals[-1].last_seq):
        while message.seq > current.last_seq:  # the range ended (possibly with missing messages at its end)
            missing.extend(range(expected_seq, current.last_seq + 1))
            close_range()
            index += 1
            current = seals[index]
            hasher = SealHasher(current.previous_digest)
            expected_seq = current.first_seq
            missing = []
        if message.seq > expected_seq:
            missing.extend(range(expected_seq, message.seq))
        hasher.update(message)
        expected_seq = message.seq + 1
    while True:  # close the last range, and any later ones that saw no message at all
        missing.extend(range(expected_seq, current.last_seq + 1))
        close_range()
        index += 1
        if index == len(seals):
            break
        current = seals[index]
        hasher = SealHasher(current.previous_digest)
        expected_seq = current.first_seq
        missing = []
