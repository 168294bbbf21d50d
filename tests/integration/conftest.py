"""pytest fixtures shared by the integration suites: one PostgreSQL per test file, and a factory
that starts tokenbouncer processes and stops them after each test."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Postgres, Tokenbouncer  # noqa: E402


@pytest.fixture(scope="module")
def pg():
    server = Postgres().start().setup_roles()
    yield server
    server.cleanup()


@pytest.fixture
def tokenbouncer(pg):
    started = []

    def start(config=None, **kw):
        tb = Tokenbouncer(pg, config=config, **kw)
        started.append(tb)
        return tb

    yield start
    for tb in started:
        tb.cleanup()
