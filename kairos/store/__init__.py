"""The customer store: PostgreSQL as the system of record for customers.

Profiles, consent with its history, events (once per id), journey entries and runs, the Temporal
calls still to make, the send ledger and suppressions. The schema is ``sql/schema.sql``; the
numbered scripts in ``sql/migrations`` build it (``kairos db upgrade``).
"""
