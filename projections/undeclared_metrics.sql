-- undeclared_metrics: every logged metric key that no definition declares (configs/metrics.yaml, projected into
-- metric_definitions). Such points are kept; this view (and metric_summaries.declared in the read model) flags
-- them. One row per key: how many runs and points, and when it was first and last logged.
SELECT
    m.key,
    count(DISTINCT m.run_id) AS runs,
    count(*) AS points,
    min(m.logged_at) AS first_logged_at,
    max(m.logged_at) AS last_logged_at
FROM metrics AS m
WHERE m.key NOT IN (SELECT name FROM metric_definitions)
GROUP BY m.key
