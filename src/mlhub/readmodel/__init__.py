"""The SQL read model: SQLAlchemy tables and read queries (Alembic migrations live in top-level migrations/)."""
