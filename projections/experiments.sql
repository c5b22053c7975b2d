-- experiments: one row per experiment, from the SQL read model.
SELECT * FROM readmodel.experiments
