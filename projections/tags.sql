-- tags: one row per (run_id, key) tag, from the SQL read model.
SELECT * FROM readmodel.tags
