"""Plain namespaces holding the members of the log's enums, for the engine's hot paths."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

from sagakit.log._records import RecordType, SagaStatus, StepKind, StepStatus

# CPython 3.11's EnumType defines __getattr__, which sends *every* attribute access on an
# enum class (RecordType.STEP_STARTED) through a slow Python-level hook: about 150 ns, ten
# times a plain attribute. The engine compares statuses and record types at every
# transition, so its hot modules read the very same members from these namespaces.
# (Python 3.12 dropped the hook; the namespaces cost nothing there.)
if TYPE_CHECKING:
    SagaStatuses = SagaStatus
    StepStatuses = StepStatus
    RecordTypes = RecordType
    StepKinds = StepKind
else:
    SagaStatuses = SimpleNamespace(**SagaStatus.__members__)
    StepStatuses = SimpleNamespace(**StepStatus.__members__)
    RecordTypes = SimpleNamespace(**RecordType.__members__)
    StepKinds = SimpleNamespace(**StepKind.__members__)
