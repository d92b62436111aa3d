"""The PostgreSQL engine: base backups, WAL archiving, point-in-time restore (engine.py wires it in)."""

KIND = "pg"  # what the catalog calls PostgreSQL backups
