"""Fixtures shared by the agent's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy.signing import SigningKey, generate_signing_key


@pytest.fixture()
def site_key(tmp_path: Path) -> SigningKey:
    """A new site signing key, also written to ``site.key`` in the test's folder."""
    key = generate_signing_key()
    key.to_file(tmp_path / "site.key")
    return key
