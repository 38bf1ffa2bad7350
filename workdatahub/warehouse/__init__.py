"""Postgres: connection (embedded or external), migrations, the transactional loader."""
