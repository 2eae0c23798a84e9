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

-- The template files plans were compiled with (kairos.pinning): each file once by content
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
-- Segment conditions count events by name, in a time window (kairos.segments).
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
