"""One benchmark site as gunicorn serves it: ``site_wsgi:create_site()``.

The site (``ours``, ``baseline`` or ``handwritten``), its database and the simulated
WeChat's addresses come from ``BENCH_*`` environment variables, so every worker process
builds the same app; each process counts its SQL into the shared file at
``BENCH_SQL_COUNTS``. With ``BENCH_SQLITE_WAL`` set, a SQLite database runs as
docs/deploying.rst advises hosts serving from SQLite (write-ahead log,
``synchronous=NORMAL``, a busy timeout), whichever site it is. ``python site_wsgi.py``
with the same variables creates the tables once, before the workers start (two workers
creating them at once would collide).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import typing as t

import sql_counter
import sqlalchemy as sa

APP_ID = "wxbe0c000000000001"
APP_SECRET = "bench-app-secret"
SITE_MODULES = {"ours": "ours_app", "baseline": "baseline_app",
                "handwritten": "handwritten_app"}


def create_site() -> t.Any:
    counts = os.environ.get("BENCH_SQL_COUNTS")
    if counts:
        sql_counter.install(pathlib.Path(counts))
    module = importlib.import_module(SITE_MODULES[os.environ["BENCH_SITE"]])
    app = module.create_app(open_base=os.environ["BENCH_OPEN_BASE"],
                            api_base=os.environ["BENCH_API_BASE"], app_id=APP_ID,
                            app_secret=APP_SECRET,
                            database_uri=os.environ["BENCH_DATABASE_URI"])
    if os.environ.get("BENCH_SQLITE_WAL"):
        _serve_sqlite_as_advised(app)
    return app


def _serve_sqlite_as_advised(app: t.Any) -> None:
    """docs/deploying.rst's SQLite set-up, on every connection the site opens from now on."""
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
        if engine.dialect.name != "sqlite":
            return

        @sa.event.listens_for(engine, "connect")
        def sqlite_pragmas(dbapi_connection: t.Any, _record: t.Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        engine.dispose()  # the connections create_all opened predate the pragmas


if __name__ == "__main__":
    app = create_site()  # creates the tables
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()
