"""The store tests' shared fixture: the session's reference run, which the slow tests copy (tests.support.reference)."""

import pytest


@pytest.fixture(scope="module")
def reference(reference_run):
    """One uninterrupted run (shared with the loop and resume tests); each test works on a copy of it."""
    return reference_run
