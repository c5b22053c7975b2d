"""CLI subcommands that are large enough for a module of their own (loaded lazily by mlhub.cli)."""
