"""SQLAlchemy 2 tables, the engine, migrations and repositories."""
