"""Test kits for users of sagakit and for the authors of new backends.

The contract suites are pytest classes: install ``sagakit[testing]`` to use them.
"""

try:
    import pytest  # noqa: F401  (checked first, so a missing pytest says what to install)
except ImportError as error:
    raise ImportError(
        "sagakit.testing holds pytest suites: pip install 'sagakit[testing]'"
    ) from error

from sagakit.testing._broker_contract import GROUPS, BrokerContract, BrokerFactory, Recorder, events
from sagakit.testing._local_database_contract import LocalDatabaseContract, LocalDatabaseFactory
from sagakit.testing._store_contract import (
    SchedulingContract,
    StoreContract,
    instance,
    started,
    step_record,
)

__all__ = [
    "GROUPS",
    "BrokerContract",
    "BrokerFactory",
    "LocalDatabaseContract",
    "LocalDatabaseFactory",
    "Recorder",
    "SchedulingContract",
    "StoreContract",
    "events",
    "instance",
    "started",
    "step_record",
]
