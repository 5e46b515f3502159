"""The store contract, against the in-memory store."""

from __future__ import annotations

import pytest

from sagakit.store import MemoryStore, Store
from sagakit.testing import SchedulingContract, StoreContract


class TestMemoryStore(StoreContract, SchedulingContract):
    @pytest.fixture
    def store(self) -> Store:
        return MemoryStore()
