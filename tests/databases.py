"""Run a test on one database rather than on both of the `database_url` fixture's."""

from __future__ import annotations

import pytest

# For tests of training, clients or pages rather than of the database: once, on SQLite (the quick
# start's database), where the routes and queries they use run on PostgreSQL in other tests.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
