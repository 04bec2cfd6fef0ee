"""The durable store: SQLAlchemy Core over SQLite (WAL, the default) or PostgreSQL."""
