"""The saga log's vocabulary, shared by both flavours: statuses, step kinds, records, the fold.

An orchestrated saga's engine and a choreographed saga's tracker write the same records to
the same log, and everything that reads it (the CLI, recovery) folds them into the same
:class:`SagaState`; so this package depends on nothing but the errors.
"""

from sagakit.log._journal import Journal
from sagakit.log._payloads import (
    Attention,
    CancelRequest,
    Compensating,
    ErrorInfo,
    Failure,
    Migrated,
    OperatorNote,
    Received,
    Skipped,
    Started,
    StepMeta,
    Waiting,
)
from sagakit.log._records import (
    Instance,
    Message,
    Record,
    RecordType,
    SagaStatus,
    StepKind,
    StepStatus,
)
from sagakit.log._redaction import MASK, NO_REDACTION, Redaction, redaction_paths
from sagakit.log._results import Results
from sagakit.log._state import TRACKED_FACTS, SagaState, StepState, shown_data

__all__ = [
    "MASK",
    "NO_REDACTION",
    "TRACKED_FACTS",
    "Attention",
    "CancelRequest",
    "Compensating",
    "ErrorInfo",
    "Failure",
    "Instance",
    "Journal",
    "Message",
    "Migrated",
    "OperatorNote",
    "Received",
    "Record",
    "RecordType",
    "Redaction",
    "Results",
    "SagaState",
    "SagaStatus",
    "Skipped",
    "Started",
    "StepKind",
    "StepMeta",
    "StepState",
    "StepStatus",
    "Waiting",
    "redaction_paths",
    "shown_data",
]
