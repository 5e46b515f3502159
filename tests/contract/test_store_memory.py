"""The store contract, against the in-memory store, and through a wrapper that forwards."""

from __future__ import annotations

import pytest

from sagakit.store import MemoryStore, Store, StoreWrapper
from sagakit.testing import SchedulingContract, StoreContract


class TestMemoryStore(StoreContract, SchedulingContract):
    @pytest.fixture
    def store(self) -> Store:
        return MemoryStore()


class TestStoreWrapper(StoreContract, SchedulingContract):
    """A wrapper that overrides nothing must keep every promise of the store it wraps."""

    @pytest.fixture
    def store(self) -> Store:
        return StoreWrapper(MemoryStore())
