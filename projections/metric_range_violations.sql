-- metric_range_violations: points of declared metrics outside their valid range (min_value, max_value of
-- metric_definitions; an end left NULL is open). NaN is not a violation (it is counted in nan_count).
SELECT
    m.run_id,
    m.experiment_id,
    m.key,
    m.step,
    m.epoch,
    m.value,
    d.min_value,
    d.max_value,
    m.logged_at,
    m.seq,
    m.attempt
FROM metrics AS m
JOIN metric_definitions AS d ON m.key = d.name
WHERE NOT isnan(m.value)
  AND ((d.min_value IS NOT NULL AND m.value < d.min_value) OR (d.max_value IS NOT NULL AND m.value > d.max_value))
