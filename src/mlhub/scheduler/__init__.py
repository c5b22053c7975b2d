"""Job submission: config validation, snapshot, seed, dataset version -> job.queued; cancel; timeouts."""
