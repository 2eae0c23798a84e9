"""The customer store: PostgreSQL as the system of record for customers.

Profiles, consent with its history, events (once per id), journey entries and runs, the Temporal
calls still to make, the send ledger and suppressions. The schema is ``sql/schema.sql``; the
numbered scripts in ``sql/migrations`` build it (``kairos db upgrade``).
"""

from kairos.store.database import Database, SchemaMismatch, StoreError, StoreUnavailable
from kairos.store.dispatch import Dispatcher, TemporalUnreachable
from kairos.store.ingest import Accepted
from kairos.store.runs import RunRecord
from kairos.store.sends import Ledger, Reservation
from kairos.store.store import Store, database_url
from kairos.store.support import CustomerRecord, Forgotten, MessageRecord

__all__ = [
    "Accepted",
    "CustomerRecord",
    "Database",
    "Dispatcher",
    "Forgotten",
    "Ledger",
    "MessageRecord",
    "Reservation",
    "RunRecord",
    "SchemaMismatch",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TemporalUnreachable",
    "database_url",
]
