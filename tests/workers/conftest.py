"""Tests here use the database: each starts from empty tables (tests/services.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
async def _empty_tables(clean_database: None) -> None:
    """Every test starts from empty tables."""
