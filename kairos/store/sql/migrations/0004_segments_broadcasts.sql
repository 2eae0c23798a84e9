-- Migration 4: segments are queries over the store, broadcasts enrol a segment's members once
-- each. Applied by `kairos db upgrade`. (Independent of migration 3: either may be applied
-- first.)

-- Segment conditions count a customer's events by name (in a time window) and look customers
-- up by stage; these keep `kairos segment count` in seconds for a million customers.
CREATE INDEX events_by_name ON events (name, occurred_at, customer_id);
CREATE INDEX messages_sent_by_channel ON messages (channel, sent_at, customer_id)
    WHERE status = 'sent';
CREATE INDEX customers_by_stage ON customers (stage);

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
