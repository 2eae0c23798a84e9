-- Migration 1: the customer store (customers, consent, events, journey entries and runs, the
-- dispatch outbox, the send ledger, suppressions). Applied by `kairos db upgrade`.

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

-- One row per customer and journey they ever entered. The entry rules are this table's
-- primary key and one conditional upsert each: `once` inserts or does nothing; `after_exit`
-- takes the row only while open_run is NULL; `restart` always takes it.
CREATE TABLE journey_entries (
    customer_id  text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    journey      text NOT NULL,
    entries      integer NOT NULL CHECK (entries >= 1),
    open_run     integer CHECK (open_run BETWEEN 1 AND entries),
    first_at     timestamptz NOT NULL,
    last_at      timestamptz NOT NULL,
    PRIMARY KEY (customer_id, journey)
);

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
    PRIMARY KEY (customer_id, journey, run_no),
    FOREIGN KEY (customer_id, journey) REFERENCES journey_entries ON DELETE CASCADE,
    FOREIGN KEY (journey, plan_version) REFERENCES plans (journey, version),
    CHECK ((ended_at IS NULL) = (outcome IS NULL))
);
CREATE UNIQUE INDEX runs_one_open ON runs (customer_id, journey) WHERE ended_at IS NULL;

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
    last_error   text
);
CREATE INDEX messages_unknown ON messages (unknown_since) WHERE status = 'unknown';
CREATE INDEX messages_by_customer ON messages (customer_id, decided_at);

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

-- Inbound SMS keywords applied, by Twilio's MessageSid: a retried STOP is applied once, so it
-- cannot suppress the number again after a later START.
CREATE TABLE inbound_receipts (
    id           text PRIMARY KEY,   -- twilio:<MessageSid>
    received_at  timestamptz NOT NULL DEFAULT now()
);
