"""Shared fixtures: where the real datasets and field cases live.

The repository ships small real samples under ``examples/data``. The larger public datasets
live beside the repository in ``../shared``; set ``FTI_SHARED_DATA`` to point elsewhere.
Tests that need them are skipped with a plain reason when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _shared_root() -> Path:
    configured = os.environ.get("FTI_SHARED_DATA")
    if configured:
        return Path(configured)
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def examples_data_dir() -> Path:
    return REPO_ROOT / "examples" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    root = _shared_root()
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root}; set FTI_SHARED_DATA to their folder")
    return root


@pytest.fixture(scope="session")
def cases_dir() -> Path:
    """Field cases built from public bug reports; the repository keeps copies in tests/cases."""
    return REPO_ROOT / "tests" / "cases"
