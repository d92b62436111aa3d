"""The Redis engine: RDB snapshots fetched over the replication protocol, restored to a directory
(engine.py wires it in)."""

KIND = "redis"  # what the catalog calls Redis backups
