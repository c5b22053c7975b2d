-- params: one row per (run_id, key) hyperparameter, values as strings, from the SQL read model.
SELECT * FROM readmodel.params
