"""hadr: backup and point-in-time recovery for PostgreSQL + Redis + S3."""

__version__ = "0.1.0"
