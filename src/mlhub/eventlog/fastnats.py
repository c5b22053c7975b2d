"""A nats-py client whose header parser is fast enough for replaying millions of stored events.

nats-py 2.15's `_parse_header_lines` tests every character of every header name with a Python generator;
on replay that was the single largest cost (about a third of the time per message). This subclass parses
the same `Name: Value` lines with the same rules (skip lines without ':', names with whitespace or non-ASCII
bytes; values decoded as UTF-8 with replacement) using a compiled regex instead.
"""

from __future__ import annotations

import re

from nats.aio.client import Client

_WHITESPACE = re.compile(rb"\s")


class FastHeaderClient(Client):
    """nats-py's Client with a faster, equivalent header parser."""

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip()
            if not name or _WHITESPACE.search(name) or not name.isascii():
                continue
            out[name.decode("ascii")] = value.strip().decode("utf-8", "replace")
        return out


def stream_sequence(reply: str) -> int:
    """The stream sequence from a JetStream delivery's reply subject ($JS.ACK.…), v1 and v2 forms."""
    tokens = reply.split(".")
    # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    # v2: $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]
    return int(tokens[5] if len(tokens) == 9 else tokens[7])
