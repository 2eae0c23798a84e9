-- Migration 8: the runs a restart ended, indexed on their own, so that `kairos report` finds
-- the few customers whose runs a restart chained into one entry (the only ones it numbers
-- with window functions) without reading every run. Applied by `kairos db upgrade`.

CREATE INDEX runs_restarted ON runs (journey, customer_id) WHERE outcome = 'restarted';
