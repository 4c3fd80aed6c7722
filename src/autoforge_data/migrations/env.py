"""Alembic environment: the database comes from our settings, never from alembic.ini.

Called through :mod:`autoforge_data.db.migrate` (which passes an open SQLAlchemy connection in
``config.attributes["connection"]``), or by the ``alembic`` command with ``-x profile=dev``, in
which case the settings are read here, at the edge.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection, Engine

from autoforge_data.db.migrate import compare_type, include_object
from autoforge_data.db.models import metadata


def run(connection: Connection) -> None:
    """Run migrations on an open connection."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=compare_type,
        include_object=include_object,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Entry point Alembic calls."""
    config = context.config
    connection = config.attributes.get("connection")
    if isinstance(connection, Engine):  # pytest-alembic hands over an engine
        with connection.connect() as conn:
            run(conn)
            conn.commit()
        return
    if connection is not None:
        run(connection)
        return
    from autoforge_data.db.engine import make_engine
    from autoforge_data.settings import Settings

    profile = context.get_x_argument(as_dictionary=True).get("profile")
    engine = make_engine(Settings.load(profile))
    try:
        with engine.connect() as conn:
            run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
main()
