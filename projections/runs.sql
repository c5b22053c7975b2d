-- runs: one row per run, from the SQL read model (status, times, config, seed, dataset, code, environment).
SELECT * FROM readmodel.runs
