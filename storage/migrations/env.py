"""Alembic environment: uses the engine handed over by storage.migrate, or the URL in the config."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from storage.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Two replicas starting together must not both migrate: serialise on an advisory lock.
            connection.execute(text("SELECT pg_advisory_lock(72431)"))
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(72431)"))
                connection.commit()


run_migrations_online()
