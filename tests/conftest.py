"""Shared fixtures and helpers for lorasim's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorasim.paths import resolve_data_dir

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA_DIR = resolve_data_dir()
CASES_DIR = SHARED / "cases"

needs_data = pytest.mark.skipif(not DATA_DIR.exists(), reason=f"data directory {DATA_DIR} not present")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*.json from the current code instead of comparing")


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden"))
