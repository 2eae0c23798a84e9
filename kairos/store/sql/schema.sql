-- The Kairos customer store: the system of record for customers. Temporal runs journeys only.
--
-- This file is the truth about the schema. The numbered scripts in migrations/ build it step by
-- step; tests/test_store_schema.py checks that applying all of them gives exactly this schema.
-- Change the schema by adding a migration and updating this file in the same commit.
--
-- Every row that is about one customer references customers(id) ON DELETE CASCADE, so that
-- `kairos forget` deletes a customer with one DELETE. Suppressions are deliberately not about a
-- customer: they are keyed hashes of addresses and survive erasure.

-- Which migrations have been applied, newest last.
CREATE TABLE kairos_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Installation-wide values: the key that hashes suppressed addresses.
CREATE TABLE kairos_meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);

-- Every compiled journey plan that a run was started with, by content hash. A run in flight is
-- pinned to its plan: routing reads what the pinned plan listens to from here, not from YAML.
CREATE TABLE plans (
    journey     text NOT NULL,
    version     text NOT NULL,
    plan        jsonb NOT NULL,
    listens     text[] NOT NULL,   -- events a run of this plan reacts to while running
    reads       text[] NOT NULL,   -- profile attributes its conditions and waits read
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journey, version)
);

-- The template files plans were compiled with (kairos.language.pinning): each file once by content
-- hash, and each plan's tree of files by name. A run renders the tree its plan names, whatever
-- has happened to templates/ since.
CREATE TABLE template_files (
    hash    text PRIMARY KEY,          -- sha256 of the source
    source  text NOT NULL
);

CREATE TABLE template_trees (
    tree        text PRIMARY KEY,      -- the plan's `templates`
    files       jsonb NOT NULL,        -- relative file name -> hash
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customers (
    id          text PRIMARY KEY,
    profile     jsonb NOT NULL DEFAULT '{}'::jsonb,
    stage       text,
    phone       text,              -- the profile's phone in E.164, for inbound SMS keywords
    version     bigint NOT NULL DEFAULT 0,   -- +1 on every profile, stage or consent change
    -- When an identify call said each attribute's value (attribute -> ISO time): a call stated
    -- for an earlier time (a retried identify arriving late) does not overwrite a newer value.
    profile_at  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_phone ON customers (phone) WHERE phone IS NOT NULL;
CREATE INDEX customers_by_stage ON customers (stage);

-- Data keys (AES-256) that encrypt what Temporal stores: one per customer, and one for payloads
-- of no customer (customer_id NULL, id 'installation'). Each is wrapped (AES-GCM) by the master
-- key named in master_key_id (KAIROS_MASTER_KEY). Every encrypted payload names its key id, so
-- deleting a customer's key (by cascade, with the customer) makes all their histories unreadable.
CREATE TABLE data_keys (
    id             text PRIMARY KEY,
    customer_id    text UNIQUE REFERENCES customers (id) ON DELETE CASCADE,
    wrapped        bytea NOT NULL,
    master_key_id  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((customer_id IS NULL) = (id = 'installation'))
);

-- Consent as it stands: no row means not granted (opt-in), except that email needs no consent
-- for transactional messages. `source` says who or what recorded it.
CREATE TABLE consent (
    customer_id text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    topic       text NOT NULL CHECK (topic IN ('email', 'sms', 'marketing')),
    granted     boolean NOT NULL,
    source      text NOT NULL,
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, topic)
);

-- Proof of consent: every change, append-only, with its source and the call that carried it.
CREATE TABLE consent_changes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    topic        text NOT NULL CHECK (topic IN ('email', 'sms', 'marketing')),
    granted      boolean NOT NULL,
    source       text NOT NULL,
    event_id     text,
    at           timestamptz NOT NULL
);
CREATE INDEX consent_changes_by_customer ON consent_changes (customer_id, id);

-- Every event accepted for a customer, once per event id. `routed_at` is set when every Temporal
-- call the event caused has been made (at once when it caused none).
CREATE TABLE events (
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    id           text NOT NULL,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    name         text NOT NULL,
    properties   jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    routed_at    timestamptz,
    PRIMARY KEY (customer_id, id)
);
CREATE INDEX events_by_customer ON events (customer_id, seq);
-- Segment conditions count events by name, in a time window (kairos.language.segments).
CREATE INDEX events_by_name ON events (name, occurred_at, customer_id);

-- One row per customer and journey they ever entered. The entry rules are this table's
-- primary key and one conditional upsert each: `once` inserts or does nothing; `after_exit`
-- takes the row only while open_run is NULL; `restart` always takes it.
CREATE TABLE journey_entries (
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    journey      text NOT NULL,
    entries      integer NOT NULL CHECK (entries >= 1),
    open_run     integer,
    first_at     timestamptz NOT NULL,
    last_at      timestamptz NOT NULL,
    -- Runs numbered before this customer id was erased (retired_runs): this entry's runs are
    -- run_base + 1 ... run_base + entries, so no workflow id of an erased run is used again.
    run_base     integer NOT NULL DEFAULT 0 CHECK (run_base >= 0),
    PRIMARY KEY (customer_id, journey),
    CONSTRAINT journey_entries_open_run_check
        CHECK (open_run BETWEEN run_base + 1 AND run_base + entries)
);

-- One row per broadcast: a journey started for every member of a segment, as the segment was
-- when the broadcast began (its members are copied into broadcast_members at once).
CREATE TABLE broadcasts (
    id           text PRIMARY KEY,
    journey      text NOT NULL,
    segment      text NOT NULL,
    condition    text NOT NULL,        -- the segment's `when`, as it was
    targeted     integer NOT NULL,     -- members when it began
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

-- Each member of a broadcast and what became of them. The journey start is recorded in the
-- store under the event id broadcast:<id>, so a member is entered at most once whatever
-- happens to this row (a crash between the start and the status update).
CREATE TABLE broadcast_members (
    broadcast    text NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'enrolled', 'refused')),
    reason       text NOT NULL DEFAULT '',
    run_no       integer,
    done_at      timestamptz,
    PRIMARY KEY (broadcast, customer_id)
);
CREATE INDEX broadcast_members_pending ON broadcast_members (broadcast, customer_id)
    WHERE status = 'pending';

-- Every run: the plan it is pinned to and how it ended. At most one open run per customer and
-- journey (runs_one_open); its Temporal workflow id is journey:<journey>:<customer>:<run_no>.
CREATE TABLE runs (
    customer_id    text NOT NULL,
    journey        text NOT NULL,
    run_no         integer NOT NULL,
    plan_version   text NOT NULL,
    trigger_event  text,            -- the event that started it: never its own goal
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz,
    outcome        text,
    goal_event     text,            -- the event that converted it (revenue is read from it)
    problems       text[] NOT NULL DEFAULT '{}',   -- what the run could not evaluate or render
    -- Told by the run with its end (kairos report reads them): the step it ended at, its split
    -- variant (holdout: the control group), and whether its step records are in run_steps.
    last_step      text,
    variant        text,
    held_out       boolean NOT NULL DEFAULT false,
    steps_recorded boolean NOT NULL DEFAULT false,
    PRIMARY KEY (customer_id, journey, run_no),
    FOREIGN KEY (customer_id, journey) REFERENCES journey_entries ON DELETE CASCADE,
    FOREIGN KEY (journey, plan_version) REFERENCES plans (journey, version),
    CHECK ((ended_at IS NULL) = (outcome IS NULL))
);
CREATE UNIQUE INDEX runs_one_open ON runs (customer_id, journey) WHERE ended_at IS NULL;
CREATE INDEX runs_by_journey ON runs (journey, customer_id, run_no) INCLUDE (started_at);
-- The runs a restart ended: the report numbers only these customers' runs into entries.
CREATE INDEX runs_restarted ON runs (journey, customer_id) WHERE outcome = 'restarted';

-- What a run recorded about its steps, written with its end: one row per step it reached, with
-- how often it was there, the sends quiet hours or a cap put off, the sends a holdout skipped
-- (which never reach the send ledger), and the last thing that happened there.
CREATE TABLE run_steps (
    customer_id  text NOT NULL,
    journey      text NOT NULL,
    run_no       integer NOT NULL,
    step         text NOT NULL,
    kind         text NOT NULL,
    visits       integer NOT NULL DEFAULT 1,
    deferred     integer NOT NULL DEFAULT 0,
    held_out     integer NOT NULL DEFAULT 0,
    outcome      text NOT NULL DEFAULT '',
    first_at     timestamptz NOT NULL,
    PRIMARY KEY (journey, customer_id, run_no, step),
    FOREIGN KEY (customer_id, journey, run_no) REFERENCES runs ON DELETE CASCADE
);

-- Every change of a customer's lifecycle stage, where it is applied (a journey's `set` step
-- with `stage:`), with the journey and run that made it.
CREATE TABLE stage_changes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    from_stage   text,
    to_stage     text NOT NULL,
    journey      text,
    run_no       integer,
    at           timestamptz NOT NULL
);
CREATE INDEX stage_changes_by_time ON stage_changes (at);
CREATE INDEX stage_changes_by_customer ON stage_changes (customer_id, at);

-- Temporal calls decided in a customer's transaction and not yet made (a transactional outbox).
-- The process that decided them makes them at once; if it dies first, a worker makes them. Per
-- customer they are made in id order; a row is deleted once its call is made.
CREATE TABLE dispatches (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    event_id     text,
    kind         text NOT NULL CHECK (kind IN ('start', 'signal')),
    journey      text NOT NULL,
    run_no       integer NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX dispatches_by_customer ON dispatches (customer_id, id);

-- The send ledger: one row per message key, decided in the send transaction.
--   pending    holding the last slot of a frequency cap until the minute it was due is over
--   deferred   quiet hours or a full cap; the journey asks again at defer_until
--   sending    allowed; calling_since is set while a provider call is under way
--   sent       the provider accepted it (provider_id), or its feedback showed it had it
--   unknown    a provider call's outcome was not seen (timeout, worker died during the call):
--              waiting for the provider's feedback, which turns it into sent
--   blocked    consent, suppression, no address, ... (reason)
--   cancelled  its run was cancelled before the provider was called
--   failed     the provider refused it, or the send gave up before any call went through
CREATE TABLE messages (
    key          text PRIMARY KEY,
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    journey      text NOT NULL,
    run_no       integer,
    step         text NOT NULL,
    channel      text NOT NULL CHECK (channel IN ('email', 'sms')),
    category     text NOT NULL CHECK (category IN ('marketing', 'transactional')),
    priority     integer NOT NULL,
    status       text NOT NULL
                 CHECK (status IN ('pending', 'deferred', 'sending', 'sent', 'unknown',
                                   'blocked', 'cancelled', 'failed')),
    reason       text NOT NULL DEFAULT '',
    due_at       timestamptz NOT NULL,   -- when the journey wanted it (for the priority contest)
    decided_at   timestamptz NOT NULL,
    defer_until  timestamptz,
    sent_at      timestamptz,            -- when the slot was taken; frequency caps count from it
    provider     text,
    provider_id  text,
    provider_ids text[] NOT NULL DEFAULT '{}',  -- every provider id seen: more than one is a duplicate
    attempts     integer NOT NULL DEFAULT 0,  -- provider calls
    unconfirmed  integer NOT NULL DEFAULT 0,  -- calls whose outcome nobody saw (timeout, worker died)
    calling_since timestamptz,           -- a provider call began and its outcome is not recorded
    unknown_since timestamptz,           -- when a call's outcome first went unseen
    resends      integer NOT NULL DEFAULT 0,  -- calls made again after no feedback came
    feedback     text,                   -- the provider's latest word on it (processed, delivered, ...)
    feedback_at  timestamptz,
    last_error   text,
    -- When the provider first said it was delivered, opened, clicked (kairos report counts them)
    delivered_at timestamptz,
    opened_at    timestamptz,
    clicked_at   timestamptz
);
CREATE INDEX messages_unknown ON messages (unknown_since) WHERE status = 'unknown';
CREATE INDEX messages_by_customer ON messages (customer_id, decided_at);
CREATE INDEX messages_by_run ON messages (journey, customer_id, run_no);
CREATE INDEX messages_sent_by_channel ON messages (channel, sent_at, customer_id)
    WHERE status = 'sent';

-- Addresses that must never be messaged again (scope all) or never with marketing (scope
-- marketing): HMAC-SHA256 of the normalised address under kairos_meta's suppression key.
CREATE TABLE suppressions (
    address_hash  bytea NOT NULL,
    channel       text NOT NULL CHECK (channel IN ('email', 'sms')),
    scope         text NOT NULL CHECK (scope IN ('all', 'marketing')),
    reason        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (address_hash, scope)
);

-- The last run number each journey reached for a customer id that was erased, under the
-- HMAC-SHA256 of the id with kairos_meta's suppression key (no customer id). Temporal keeps an
-- erased run's workflow id (journey:<journey>:<customer>:<run_no>) and refuses to start it
-- again, so a customer signing up again under the same id continues the numbering from here.
CREATE TABLE retired_runs (
    id_hash   bytea NOT NULL,
    journey   text NOT NULL,
    last_run  integer NOT NULL CHECK (last_run >= 1),
    PRIMARY KEY (id_hash, journey)
);

-- Inbound SMS keywords applied, by Twilio's MessageSid: a retried STOP is applied once, so it
-- cannot suppress the number again after a later START.
CREATE TABLE inbound_receipts (
    id           text PRIMARY KEY,   -- twilio:<MessageSid>
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- A provider (per account) that asked us to slow down (429 with Retry-After): no worker calls
-- it before `until`. Every send looks here just before its provider call.
CREATE TABLE provider_pauses (
    provider    text PRIMARY KEY,
    until       timestamptz NOT NULL,
    reason      text NOT NULL,
    pauses      integer NOT NULL DEFAULT 1   -- 429s that set or lengthened the pause, ever
);

-- The segments a journey triggers on whose membership the store keeps, with the condition it
-- was kept for: the first sweep of a segment (or of an edited condition) records who is in it
-- without starting anyone, so a new trigger is no broadcast to everyone already there.
CREATE TABLE segment_tracking (
    segment      text PRIMARY KEY,
    condition    text NOT NULL,
    since        timestamptz NOT NULL,
    swept_at     timestamptz NOT NULL
);

-- Who is in a tracked segment (left_at NULL), and who was and left. Entering is the change
-- from no row or a row with left_at to a row without: one statement makes it, so one
-- transaction alone sees it and starts the journeys that trigger on it.
CREATE TABLE segment_members (
    segment      text NOT NULL,
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    entered_at   timestamptz NOT NULL,
    left_at      timestamptz,
    entries      integer NOT NULL DEFAULT 1 CHECK (entries >= 1),
    PRIMARY KEY (segment, customer_id)
);
CREATE INDEX segment_members_by_customer ON segment_members (customer_id);

-- The points each event earned under a scoring rule (customer.yaml `scoring:`). The score in
-- the profile is the sum of the points not yet expired; `expired` marks points already taken
-- off it, so the sweep that takes off expired points touches each row once.
CREATE TABLE score_points (
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    score        text NOT NULL,
    event_id     text NOT NULL,
    rule         integer NOT NULL,
    points       numeric NOT NULL,
    at           timestamptz NOT NULL,
    expires_at   timestamptz,
    expired      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (customer_id, score, event_id, rule)
);
CREATE INDEX score_points_expiring ON score_points (expires_at)
    WHERE NOT expired AND expires_at IS NOT NULL;

-- What `kairos report` reads: rollups kept at write time (migration 10).
--
-- Two layers, both written by triggers in the transaction that changes a run, its step records,
-- a message or a customer's locale (so no write path can forget them, and an entry's figures
-- are whatever its rows say, including a restart re-marked `converted`):
--
-- * parts: one customer's entry as the report counts it (report_entry_parts), what it reached
--   step by step (report_step_parts) and its messages by step, channel and status
--   (report_message_parts). After any change to a customer's runs of a journey, the parts of
--   that customer and journey are recomputed from their rows (kairos_report_entries) and
--   replaced. The report reads parts only for what the rollups cannot answer: the part of the
--   first day of an arbitrary --since, and a conversion window that is not a bucket edge.
-- * rollups: sums by journey and the UTC day the entry began (report_entry_days,
--   report_step_days, report_message_days). Each replacement of parts appends the difference
--   (old parts negative, new positive): appending takes no lock on a shared row, so concurrent
--   writers neither wait for nor deadlock on each other; kairos_report_compact() folds the
--   appended rows (the worker does it every minute) and the report sums what is there.
--
-- Time to convert is kept exactly in the parts and as a bucket in the rollups: the next whole
-- minute up to an hour, the next whole hour up to three days, the next whole day up to a year,
-- else the next 365 days. A conversion window on a bucket edge (7d, 48h, 30m) is a sum of
-- buckets; percentiles from the rollups are the edge of the bucket they fall in.

CREATE FUNCTION kairos_report_bucket(seconds double precision) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN seconds IS NULL THEN NULL
        WHEN seconds <= 3600 THEN 60 * ceil(greatest(seconds, 0) / 60)
        WHEN seconds <= 259200 THEN 3600 * ceil(seconds / 3600)
        WHEN seconds <= 31536000 THEN 86400 * ceil(seconds / 86400)
        ELSE 31536000 * ceil(seconds / 31536000)
    END::bigint
$$;

CREATE TABLE report_entry_parts (
    customer_id  text NOT NULL,
    journey      text NOT NULL,
    first_run    integer NOT NULL,
    last_run     integer NOT NULL,
    entered_at   timestamptz NOT NULL,
    ended_at     timestamptz,           -- null: running
    outcome      text,                  -- null: running
    last_step    text NOT NULL,         -- '' when none was recorded
    held_out     boolean NOT NULL,
    restarts     integer NOT NULL,
    unrecorded   integer NOT NULL,      -- 1: ended without step records
    locale       text NOT NULL,
    to_convert   double precision,      -- seconds from entering to the goal, when converted
    total        numeric,               -- what the goal event was worth
    currency     text NOT NULL
);
CREATE INDEX report_entry_parts_by_key ON report_entry_parts (customer_id, journey);
CREATE INDEX report_entry_parts_by_time ON report_entry_parts (entered_at);

CREATE TABLE report_step_parts (
    customer_id  text NOT NULL,
    journey      text NOT NULL,
    entered_at   timestamptz NOT NULL,
    to_convert   double precision,      -- the entry's, for a split step's conversions
    step         text NOT NULL,
    kind         text NOT NULL,
    took         text,                  -- a split step's record: which variant
    deferred     integer NOT NULL,
    held_out     integer NOT NULL
);
CREATE INDEX report_step_parts_by_key ON report_step_parts (customer_id, journey);
CREATE INDEX report_step_parts_by_time ON report_step_parts (entered_at);

CREATE TABLE report_message_parts (
    customer_id  text NOT NULL,
    journey      text NOT NULL,
    entered_at   timestamptz NOT NULL,
    step         text NOT NULL,
    channel      text NOT NULL,
    status       text NOT NULL,
    messages     integer NOT NULL,
    delivered    integer NOT NULL,
    opened       integer NOT NULL,
    clicked      integer NOT NULL
);
CREATE INDEX report_message_parts_by_key ON report_message_parts (customer_id, journey);
CREATE INDEX report_message_parts_by_time ON report_message_parts (entered_at);

CREATE TABLE report_entry_days (
    journey      text NOT NULL,
    day          date NOT NULL,
    held_out     boolean NOT NULL,
    outcome      text,
    last_step    text NOT NULL,
    locale       text NOT NULL,
    currency     text NOT NULL,
    to_convert   bigint,                -- kairos_report_bucket of the parts' to_convert
    entries      bigint NOT NULL,
    restarts     bigint NOT NULL,
    unrecorded   bigint NOT NULL,
    total        numeric
);
CREATE INDEX report_entry_days_by_day ON report_entry_days (day);

CREATE TABLE report_step_days (
    journey      text NOT NULL,
    day          date NOT NULL,
    step         text NOT NULL,
    kind         text NOT NULL,
    took         text,
    to_convert   bigint,                -- only for a split step's record
    reached      bigint NOT NULL,
    deferred     bigint NOT NULL,
    held_out     bigint NOT NULL
);
CREATE INDEX report_step_days_by_day ON report_step_days (day);

CREATE TABLE report_message_days (
    journey      text NOT NULL,
    day          date NOT NULL,
    step         text NOT NULL,
    channel      text NOT NULL,
    status       text NOT NULL,
    messages     bigint NOT NULL,
    delivered    bigint NOT NULL,
    opened       bigint NOT NULL,
    clicked      bigint NOT NULL
);
CREATE INDEX report_message_days_by_day ON report_message_days (day);

-- The entries of the given customers' journeys (pairs: customers[i], journeys[i]), computed
-- from their runs as the report counts them. A run starts a new entry unless the run before it
-- ended restarted, so the runs a restart chained are one entry, and its last run says how it
-- ended. Only the customers a restart chained (found by the partial index runs_restarted) need
-- the window functions that number entries; every other run is an entry by itself. (PL/pgSQL,
-- not SQL, so that a session plans it once, not at every write.)
CREATE FUNCTION kairos_report_entries(customers text[], journeys text[])
RETURNS TABLE (
    customer_id text, journey text, first_run integer, last_run integer, entered_at timestamptz,
    ended_at timestamptz, outcome text, last_step text, held_out boolean, restarts integer,
    unrecorded integer, locale text, to_convert double precision, total numeric, currency text
)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH keys AS (
    SELECT DISTINCT k.customer_id, k.journey FROM unnest(customers, journeys) AS k (customer_id, journey)
), chains AS (
    SELECT DISTINCT r.customer_id, r.journey FROM runs r JOIN keys k USING (customer_id, journey)
    WHERE r.outcome = 'restarted'
), chained AS (
    SELECT r.customer_id, r.journey, r.run_no, r.started_at, r.ended_at, r.outcome, r.goal_event,
           r.last_step, r.held_out, r.steps_recorded,
           lag(r.outcome) OVER w IS DISTINCT FROM 'restarted' AS first_of_entry,
           r.outcome IS DISTINCT FROM 'restarted' OR lead(r.run_no) OVER w IS NULL AS last_of_entry
    FROM runs r JOIN chains USING (customer_id, journey)
    WINDOW w AS (PARTITION BY r.journey, r.customer_id ORDER BY r.run_no)
), numbered AS (
    SELECT *, sum(first_of_entry::int) OVER w AS entry_no
    FROM chained WINDOW w AS (PARTITION BY journey, customer_id ORDER BY run_no)
), entries AS (
    SELECT n.journey, n.customer_id, min(n.run_no) AS first_run, max(n.run_no) AS last_run,
           min(n.started_at) AS entered_at,
           bool_or(n.last_of_entry AND n.ended_at IS NULL) AS open,
           max(n.ended_at) FILTER (WHERE n.last_of_entry) AS ended_at,
           max(n.outcome) FILTER (WHERE n.last_of_entry) AS outcome,
           max(n.goal_event) FILTER (WHERE n.last_of_entry) AS goal_event,
           max(n.last_step) FILTER (WHERE n.last_of_entry) AS last_step,
           bool_or(n.held_out) AS held_out,
           count(*) FILTER (WHERE n.outcome = 'restarted') AS restarts,
           bool_and(n.steps_recorded OR n.ended_at IS NULL) AS recorded
    FROM numbered n GROUP BY n.journey, n.customer_id, n.entry_no
    UNION ALL
    SELECT r.journey, r.customer_id, r.run_no, r.run_no, r.started_at, r.ended_at IS NULL,
           r.ended_at, r.outcome, r.goal_event, r.last_step, r.held_out, 0,
           r.steps_recorded OR r.ended_at IS NULL
    FROM runs r JOIN keys k USING (customer_id, journey)
    WHERE NOT EXISTS (
        SELECT FROM chains c WHERE c.customer_id = r.customer_id AND c.journey = r.journey)
)
SELECT r.customer_id, r.journey, r.first_run, r.last_run, r.entered_at,
       CASE WHEN NOT r.open THEN r.ended_at END,
       CASE WHEN NOT r.open THEN r.outcome END,
       coalesce(r.last_step, ''), r.held_out, r.restarts::int,
       CASE WHEN r.recorded THEN 0 ELSE 1 END,
       coalesce(c.profile ->> 'locale', ''),
       CASE WHEN NOT r.open AND r.outcome = 'converted'
            THEN extract(epoch FROM r.ended_at - r.entered_at)::double precision END,
       CASE WHEN jsonb_typeof(e.properties -> 'total') = 'number'
            THEN (e.properties ->> 'total')::numeric END,
       coalesce(e.properties ->> 'currency', '')
FROM entries r
JOIN customers c ON c.id = r.customer_id
LEFT JOIN events e ON NOT r.open AND r.outcome = 'converted' AND e.customer_id = r.customer_id
  AND e.id = r.goal_event;
END
$$;

-- Replace the parts of the given customers' journeys with what their rows say now, and append
-- the difference to the rollups. ``lock``: take the customers' journey_entries rows first (in
-- one order), so that two transactions changing one customer's journey replace its parts one
-- after the other, the second seeing the first's; the back-fill, alone on the database, skips it.
CREATE FUNCTION kairos_report_refresh(
    customers text[], journeys text[], lock boolean, parts text DEFAULT 'all'
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF lock THEN
        PERFORM 1 FROM journey_entries j
        JOIN (SELECT DISTINCT * FROM unnest(customers, journeys)) AS k (customer_id, journey)
          USING (customer_id, journey)
        ORDER BY j.customer_id, j.journey FOR UPDATE OF j;
    END IF;
    IF parts = 'all' THEN
    -- A new statement: in READ COMMITTED it sees what the transactions it waited for wrote.
    WITH keys AS (
        SELECT DISTINCT * FROM unnest(customers, journeys) AS k (customer_id, journey)
    ), old AS (
        DELETE FROM report_entry_parts p USING keys k
        WHERE p.customer_id = k.customer_id AND p.journey = k.journey RETURNING p.*
    ), new AS (
        INSERT INTO report_entry_parts SELECT * FROM kairos_report_entries(customers, journeys)
        RETURNING *
    ), both_ AS (
        SELECT -1 AS sign, * FROM old UNION ALL SELECT 1, * FROM new
    )
    INSERT INTO report_entry_days
    SELECT journey, (entered_at AT TIME ZONE 'UTC')::date, held_out, outcome, last_step, locale,
           currency, kairos_report_bucket(to_convert), sum(sign), sum(sign * restarts),
           sum(sign * unrecorded), sum(sign * total)
    FROM both_ GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    HAVING sum(sign) <> 0 OR sum(sign * restarts) <> 0 OR sum(sign * unrecorded) <> 0
        OR coalesce(sum(sign * total), 0) <> 0;

    END IF;
    IF parts IN ('all', 'steps') THEN
    WITH keys AS (
        SELECT DISTINCT * FROM unnest(customers, journeys) AS k (customer_id, journey)
    ), old AS (
        DELETE FROM report_step_parts p USING keys k
        WHERE p.customer_id = k.customer_id AND p.journey = k.journey RETURNING p.*
    ), new AS (
        -- What an ended entry's runs recorded, one row per step and variant taken: an entry a
        -- restart chained can reach a step in two runs and counts there once.
        INSERT INTO report_step_parts
        SELECT e.customer_id, e.journey, e.entered_at, e.to_convert, s.step, max(s.kind),
               CASE WHEN s.kind = 'split' THEN s.outcome END, sum(s.deferred), sum(s.held_out)
        FROM report_entry_parts e JOIN keys k USING (customer_id, journey)
        JOIN run_steps s ON s.journey = e.journey AND s.customer_id = e.customer_id
          AND s.run_no BETWEEN e.first_run AND e.last_run
        WHERE e.ended_at IS NOT NULL
        GROUP BY e.customer_id, e.journey, e.first_run, e.entered_at, e.to_convert, s.step, 7
        RETURNING *
    ), both_ AS (
        SELECT -1 AS sign, * FROM old UNION ALL SELECT 1, * FROM new
    )
    INSERT INTO report_step_days
    SELECT journey, (entered_at AT TIME ZONE 'UTC')::date, step, kind, took,
           CASE WHEN took IS NOT NULL THEN kairos_report_bucket(to_convert) END,
           sum(sign), sum(sign * deferred), sum(sign * held_out)
    FROM both_ GROUP BY 1, 2, 3, 4, 5, 6
    HAVING sum(sign) <> 0 OR sum(sign * deferred) <> 0 OR sum(sign * held_out) <> 0;

    END IF;
    IF parts IN ('all', 'messages') THEN
    WITH keys AS (
        SELECT DISTINCT * FROM unnest(customers, journeys) AS k (customer_id, journey)
    ), old AS (
        DELETE FROM report_message_parts p USING keys k
        WHERE p.customer_id = k.customer_id AND p.journey = k.journey RETURNING p.*
    ), new AS (
        -- The send ledger's decisions (a message still being sent, or put off, counts once
        -- decided; one support withdrew is the run's outcome) and the provider's feedback.
        INSERT INTO report_message_parts
        SELECT e.customer_id, e.journey, e.entered_at, m.step, m.channel, m.status, count(*),
               count(m.delivered_at), count(m.opened_at), count(m.clicked_at)
        FROM report_entry_parts e JOIN keys k USING (customer_id, journey)
        JOIN messages m ON m.journey = e.journey AND m.customer_id = e.customer_id
          AND m.run_no BETWEEN e.first_run AND e.last_run
        WHERE m.status IN ('sent', 'blocked', 'failed')
        GROUP BY e.customer_id, e.journey, e.first_run, e.entered_at, m.step, m.channel, m.status
        RETURNING *
    ), both_ AS (
        SELECT -1 AS sign, * FROM old UNION ALL SELECT 1, * FROM new
    )
    INSERT INTO report_message_days
    SELECT journey, (entered_at AT TIME ZONE 'UTC')::date, step, channel, status, sum(sign * messages),
           sum(sign * delivered), sum(sign * opened), sum(sign * clicked)
    FROM both_ GROUP BY 1, 2, 3, 4, 5
    HAVING sum(sign * messages) <> 0 OR sum(sign * delivered) <> 0 OR sum(sign * opened) <> 0
        OR sum(sign * clicked) <> 0;
    END IF;
END
$$;

-- Fold the rows the writers appended: each rollup becomes one row per key. Safe beside writers
-- (it moves only the rows its statement sees) and beside another compaction (a row is moved by
-- whichever deletes it).
CREATE FUNCTION kairos_report_compact() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (DELETE FROM report_entry_days RETURNING *)
    INSERT INTO report_entry_days
    SELECT journey, day, held_out, outcome, last_step, locale, currency, to_convert, sum(entries),
           sum(restarts), sum(unrecorded), sum(total)
    FROM gone GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    HAVING sum(entries) <> 0 OR sum(restarts) <> 0 OR sum(unrecorded) <> 0
        OR coalesce(sum(total), 0) <> 0;
    WITH gone AS (DELETE FROM report_step_days RETURNING *)
    INSERT INTO report_step_days
    SELECT journey, day, step, kind, took, to_convert, sum(reached), sum(deferred), sum(held_out)
    FROM gone GROUP BY 1, 2, 3, 4, 5, 6
    HAVING sum(reached) <> 0 OR sum(deferred) <> 0 OR sum(held_out) <> 0;
    WITH gone AS (DELETE FROM report_message_days RETURNING *)
    INSERT INTO report_message_days
    SELECT journey, day, step, channel, status, sum(messages), sum(delivered), sum(opened),
           sum(clicked)
    FROM gone GROUP BY 1, 2, 3, 4, 5
    HAVING sum(messages) <> 0 OR sum(delivered) <> 0 OR sum(opened) <> 0 OR sum(clicked) <> 0;
    WITH gone AS (DELETE FROM report_stage_days RETURNING *)
    INSERT INTO report_stage_days
    SELECT stage, day, sum(customers) FROM gone GROUP BY 1, 2 HAVING sum(customers) <> 0;
END
$$;

-- The triggers: after each statement that changed runs, step records or messages, refresh the
-- customers' journeys it touched (each once, however many rows); after a change of customers'
-- locales, every journey of theirs. An update that changed nothing the report reads refreshes
-- nothing.
CREATE FUNCTION kairos_report_rows_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kairos_report_refresh(array_agg(customer_id), array_agg(journey), true, TG_ARGV[0])
    FROM (SELECT DISTINCT customer_id, journey FROM new_rows) k HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION kairos_report_rows_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kairos_report_refresh(array_agg(customer_id), array_agg(journey), true, TG_ARGV[0])
    FROM (SELECT DISTINCT customer_id, journey FROM old_rows) k HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION kairos_report_runs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kairos_report_refresh(array_agg(customer_id), array_agg(journey), true)
    FROM (
        SELECT n.customer_id, n.journey FROM new_rows n
        JOIN old_rows o USING (customer_id, journey, run_no)
        WHERE (n.started_at, n.ended_at, n.outcome, n.goal_event, n.last_step, n.held_out,
               n.steps_recorded)
              IS DISTINCT FROM (o.started_at, o.ended_at, o.outcome, o.goal_event, o.last_step,
                                o.held_out, o.steps_recorded)
        GROUP BY 1, 2
    ) k HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION kairos_report_messages_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kairos_report_refresh(array_agg(customer_id), array_agg(journey), true, 'messages')
    FROM (
        SELECT n.customer_id, n.journey FROM new_rows n JOIN old_rows o USING (key)
        WHERE (n.customer_id, n.journey, n.run_no, n.step, n.channel, n.status, n.delivered_at,
               n.opened_at, n.clicked_at)
              IS DISTINCT FROM (o.customer_id, o.journey, o.run_no, o.step, o.channel, o.status,
                                o.delivered_at, o.opened_at, o.clicked_at)
        GROUP BY 1, 2
    ) k HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION kairos_report_locales_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kairos_report_refresh(array_agg(j.customer_id), array_agg(j.journey), true)
    FROM new_rows n JOIN old_rows o USING (id)
    JOIN journey_entries j ON j.customer_id = n.id
    WHERE n.profile ->> 'locale' IS DISTINCT FROM o.profile ->> 'locale'
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER report_runs_inserted AFTER INSERT ON runs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_rows_inserted('all');
CREATE TRIGGER report_runs_updated AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_runs_updated();
CREATE TRIGGER report_runs_deleted AFTER DELETE ON runs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_rows_deleted('all');
CREATE TRIGGER report_run_steps_inserted AFTER INSERT ON run_steps
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_rows_inserted('steps');
CREATE TRIGGER report_run_steps_deleted AFTER DELETE ON run_steps
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_rows_deleted('steps');
CREATE TRIGGER report_messages_inserted AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_rows_inserted('messages');
CREATE TRIGGER report_messages_updated AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_messages_updated();
CREATE TRIGGER report_messages_deleted AFTER DELETE ON messages
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_rows_deleted('messages');
CREATE TRIGGER report_customers_updated AFTER UPDATE ON customers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_locales_updated();

-- The lifecycle: each customer's stage and since when they have been in it (their last stage
-- change, or when they were created), and customers per stage and UTC day they entered it.
CREATE TABLE report_stage_parts (
    customer_id  text NOT NULL,
    stage        text,
    since        timestamptz NOT NULL
);
CREATE INDEX report_stage_parts_by_customer ON report_stage_parts (customer_id);
CREATE INDEX report_stage_parts_by_since ON report_stage_parts (since);

CREATE TABLE report_stage_days (
    stage        text,
    day          date NOT NULL,
    customers    bigint NOT NULL
);

-- Replace the stage parts of the given customers with what their rows say now, and append the
-- difference to report_stage_days (``lock`` as in kairos_report_refresh, on the customers).
CREATE FUNCTION kairos_report_refresh_stages(ids text[], lock boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF lock THEN
        PERFORM 1 FROM customers WHERE id = ANY (ids) ORDER BY id FOR UPDATE;
    END IF;
    WITH keys AS (
        SELECT DISTINCT k.customer_id FROM unnest(ids) AS k (customer_id)
    ), old AS (
        DELETE FROM report_stage_parts p USING keys k WHERE p.customer_id = k.customer_id
        RETURNING p.*
    ), new AS (
        INSERT INTO report_stage_parts
        SELECT c.id, c.stage, coalesce(s.at, c.created_at)
        FROM customers c JOIN keys k ON k.customer_id = c.id
        LEFT JOIN LATERAL (
            SELECT max(x.at) AS at FROM stage_changes x WHERE x.customer_id = c.id
        ) s ON true
        RETURNING *
    ), both_ AS (
        SELECT -1 AS sign, * FROM old UNION ALL SELECT 1, * FROM new
    )
    INSERT INTO report_stage_days
    SELECT stage, (since AT TIME ZONE 'UTC')::date, sum(sign) FROM both_
    GROUP BY 1, 2 HAVING sum(sign) <> 0;
END
$$;

CREATE FUNCTION kairos_report_customers_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM kairos_report_refresh_stages(array_agg(id), true) FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM kairos_report_refresh_stages(array_agg(id), false) FROM old_rows
        HAVING count(*) > 0;
    ELSE
        PERFORM kairos_report_refresh_stages(array_agg(n.id), true)
        FROM new_rows n JOIN old_rows o USING (id)
        WHERE (n.stage, n.created_at) IS DISTINCT FROM (o.stage, o.created_at)
        HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION kairos_report_stage_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM kairos_report_refresh_stages(array_agg(DISTINCT customer_id), true)
        FROM new_rows HAVING count(*) > 0;
    ELSE
        PERFORM kairos_report_refresh_stages(array_agg(DISTINCT customer_id), true)
        FROM old_rows HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER report_customers_inserted AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_customers_changed();
CREATE TRIGGER report_customers_stage_updated AFTER UPDATE ON customers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_customers_changed();
CREATE TRIGGER report_customers_deleted AFTER DELETE ON customers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_customers_changed();
CREATE TRIGGER report_stage_changes_inserted AFTER INSERT ON stage_changes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_stage_changed();
CREATE TRIGGER report_stage_changes_deleted AFTER DELETE ON stage_changes
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kairos_report_stage_changed();
