-- Migration 6: journeys that start when a customer enters a segment, and lead scores kept by
-- customer.yaml's scoring rules. Applied by `kairos db upgrade`.

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
