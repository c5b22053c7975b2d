"""Projector runtime (checkpoint, batching, dead letters) and the projectors.

Imports events, eventlog, readmodel and analytics of mlhub."""
