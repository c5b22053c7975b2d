-- current_metrics: the points of each run's current attempt, what metric_summary and leaderboard count (the rule
-- of the read model's metric_summaries and of mlhub.events.final_metrics). A run's current attempt is the highest
-- of the read model's runs.attempt and the attempts its points carry; points of an earlier attempt (abandoned: a
-- worker presumed dead, the job retried) stay in `metrics` but not here. A point with attempt NULL (stored before
-- events said their attempt) counts for the current attempt.
WITH attempts AS (
    SELECT run_id, max(attempt) AS attempt
    FROM (
        SELECT run_id, attempt FROM readmodel.runs
        UNION ALL
        SELECT run_id, max(attempt) FROM mlhub.points GROUP BY run_id
    )
    GROUP BY run_id
)
SELECT m.*
FROM metrics AS m
LEFT JOIN attempts AS a ON a.run_id = m.run_id
WHERE m.attempt IS NULL OR a.attempt IS NULL OR m.attempt >= a.attempt
