"""The fault matrix's target suite (tests/test_kills.py runs it; `make test` collects nothing here:
its file is not named test_*.py)."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def instance_first(pktassert_trace_pipe):
    """This process's tracefs instance, made before any phase, so every phase meets a live one. Its
    name and this process's pid (the owner mark of the namespaces it makes) are noted for the matrix,
    which tells this run's leftovers from those of runs beside it (other cases, under xdist)."""
    pipe = pktassert_trace_pipe()
    notes = os.environ.get("KILL_TARGET_NOTES")
    if notes:
        with open(notes, "a") as f:
            f.write(f"instance {pipe.dir.name}\npid {os.getpid()}\n")
