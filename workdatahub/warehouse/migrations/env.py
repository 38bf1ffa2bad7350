"""Alembic environment: migrations run on the connection `wdh db upgrade` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    # all pending migrations in one transaction: one fails, none stays (but for a migration
    # that commits it in an `autocommit_block`)
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
else:  # plain `alembic` with sqlalchemy.url set
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=None, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
