-- Migration 5: an erased customer's run numbers are retired, so the same customer id signing
-- up again gets new workflow ids instead of colliding with the erased runs' ids, which Temporal
-- keeps and refuses to start again. Applied by `kairos db upgrade`.

ALTER TABLE journey_entries
    ADD COLUMN run_base integer NOT NULL DEFAULT 0 CHECK (run_base >= 0),
    DROP CONSTRAINT journey_entries_check,
    ADD CONSTRAINT journey_entries_open_run_check
        CHECK (open_run BETWEEN run_base + 1 AND run_base + entries);

-- The last run number each journey reached for a customer id that was erased, under the
-- HMAC-SHA256 of the id with kairos_meta's suppression key (no customer id).
CREATE TABLE retired_runs (
    id_hash   bytea NOT NULL,
    journey   text NOT NULL,
    last_run  integer NOT NULL CHECK (last_run >= 1),
    PRIMARY KEY (id_hash, journey)
);
