"""Alembic migrations: one linear history for SQLite (batch mode) and PostgreSQL."""
