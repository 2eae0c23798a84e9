-- Migration 2: a provider that answered 429 pauses its sends on every worker until its
-- Retry-After has passed. Applied by `kairos db upgrade`.

-- A provider (per account) that asked us to slow down: no worker calls it before `until`.
CREATE TABLE provider_pauses (
    provider    text PRIMARY KEY,
    until       timestamptz NOT NULL,
    reason      text NOT NULL,
    pauses      integer NOT NULL DEFAULT 1   -- 429s that set or lengthened the pause, ever
);
