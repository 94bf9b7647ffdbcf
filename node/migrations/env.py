"""Alembic environment for ctnode: run from code by node.db.init_db (no alembic.ini needed).

The connection comes from config.attributes["connection"] when the caller has one (init_db,
tests); otherwise an engine is made from the sqlalchemy.url main option.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from node.db import Base, make_engine


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as new_connection:
            run_migrations(new_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("ctnode migrations run online only (node.db.init_db)")
run_migrations_online()
