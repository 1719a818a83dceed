"""One benchmark site as gunicorn serves it: ``site_wsgi:create_site()``.

The site (``ours``, ``baseline`` or ``handwritten``), its database and the simulated
WeChat's addresses come from ``BENCH_*`` environment variables, so every worker process
builds the same app; each process counts its SQL into the shared file at
``BENCH_SQL_COUNTS``. ``python site_wsgi.py`` with the same variables creates the tables
once, before the workers start (two workers creating them at once would collide).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import typing as t

import sql_counter

APP_ID = "wxbe0c000000000001"
APP_SECRET = "bench-app-secret"
SITE_MODULES = {"ours": "ours_app", "baseline": "baseline_app",
                "handwritten": "handwritten_app"}


def create_site() -> t.Any:
    counts = os.environ.get("BENCH_SQL_COUNTS")
    if counts:
        sql_counter.install(pathlib.Path(counts))
    module = importlib.import_module(SITE_MODULES[os.environ["BENCH_SITE"]])
    return module.create_app(open_base=os.environ["BENCH_OPEN_BASE"],
                             api_base=os.environ["BENCH_API_BASE"], app_id=APP_ID,
                             app_secret=APP_SECRET,
                             database_uri=os.environ["BENCH_DATABASE_URI"])


if __name__ == "__main__":
    app = create_site()  # creates the tables
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()
