"""mlhub: an event-sourced ML experiment hub on NATS JetStream."""

__version__ = "0.1.0"
