"""Metric tables (Parquet) and DuckDB queries; SQL views come from top-level projections/*.sql."""
