-- epoch_metrics: one row per run, key and epoch: the value of the epoch's last point (by step, then timestamp),
-- from the SQL read model (every point is in `metrics`). value is NULL when that point was NaN.
SELECT
    run_id,
    key,
    epoch,
    value,
    step,
    "timestamp"
FROM readmodel.epoch_metrics
