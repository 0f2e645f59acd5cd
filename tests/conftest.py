"""The one root gate for every test directory.

A test (or module) marked ``root`` creates network namespaces, installs rules or runs as
another user, so it runs only as root. As root (CI is root) every such test runs; otherwise
each is skipped with the reason below: nothing is skipped silently, and no test file checks
the uid itself (the shared small clusters are in tests/unit/clusters.py).
"""
from __future__ import annotations

import os

import pytest

ROOT = os.geteuid() == 0
NOT_ROOT = ("needs root (marked `root`): it creates network namespaces or runs as another "
            "user; run the suite as root, as CI does")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not ROOT and item.get_closest_marker("root") is not None:
        pytest.skip(NOT_ROOT)
