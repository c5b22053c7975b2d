-- metric_summary: per run and key, computed by DuckDB from the points of the run's current attempt
-- (current_metrics; `metrics` has every attempt's).
-- NaN values are counted (nan_count) but left out of min/max/mean; last_* is the point with the highest
-- (step, timestamp, seq), NaN included, as in the read model's metric_summaries.
SELECT
    run_id,
    any_value(experiment_id) AS experiment_id,
    key,
    count(*) AS count,
    count(*) FILTER (WHERE isnan(value)) AS nan_count,
    min(value) FILTER (WHERE NOT isnan(value)) AS min_value,
    max(value) FILTER (WHERE NOT isnan(value)) AS max_value,
    avg(value) FILTER (WHERE isfinite(value)) AS mean_value,
    arg_max(value, (step, "timestamp", seq)) AS last_value,
    max(step) AS last_step,
    min("timestamp") AS first_timestamp,
    max("timestamp") AS last_timestamp
FROM current_metrics
GROUP BY run_id, key
