-- leaderboard: for every declared metric (metric_definitions) and every run that logged it, the best value by
-- the metric's direction ('max': highest, 'min': lowest; NaN ignored), the step where it was first reached,
-- and the run's rank among the runs of its experiment (1 = best; ties share a rank). Only each run's current
-- attempt counts (current_metrics): an abandoned attempt's points never rank a run.
WITH best AS (
    SELECT
        m.run_id,
        any_value(m.experiment_id) AS experiment_id,
        m.key AS metric,
        d.direction,
        CASE WHEN d.direction = 'max' THEN max(m.value) ELSE min(m.value) END AS best_value,
        CASE
            WHEN d.direction = 'max' THEN arg_max(m.step, (m.value, -m.step))
            ELSE arg_min(m.step, (m.value, m.step))
        END AS best_step,
        count(*) AS points
    FROM current_metrics AS m
    JOIN metric_definitions AS d ON m.key = d.name
    WHERE NOT isnan(m.value)
    GROUP BY m.run_id, m.key, d.direction
)
SELECT
    metric,
    direction,
    experiment_id,
    run_id,
    best_value,
    best_step,
    points,
    rank() OVER (
        PARTITION BY metric, experiment_id
        ORDER BY CASE WHEN direction = 'max' THEN -best_value ELSE best_value END
    ) AS rank
FROM best
