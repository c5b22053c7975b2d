-- metrics: every metric point, one row per point logged (snapshot of the points Delta table at open).
-- timestamp: milliseconds since the Unix epoch (as logged); logged_at: the same instant as a UTC TIMESTAMP.
-- attempt: the run attempt that logged the point (NULL for points stored before events said it); every attempt's
-- points are here, current_metrics has those of each run's current attempt only.
-- bucket: the run's partition; filter on bucket = metric_bucket('<run_id>') to read one partition only
-- (the table macro run_metrics('<run_id>', '<key>') does this for one run's history).
SELECT
    run_id,
    experiment_id,
    key,
    step,
    epoch,
    value,
    "timestamp",
    epoch_ms("timestamp") AS logged_at,
    seq,
    attempt,
    bucket
FROM mlhub.points
