-- Migration 3: what `kairos report` counts, kept in the store where it happens, so a report is
-- a few SQL queries and no Temporal call per run. Applied by `kairos db upgrade`.

-- What a run recorded about its steps, written with its end (the `end_run` activity): one row per
-- step the run reached, with how often it was there, the sends quiet hours or a cap put off and
-- the sends a holdout skipped (which never reach the send ledger), and the last thing that
-- happened there (a split's variant, the outcome the run ended with at that step).
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

-- A run's end, as the run told it: the step it ended at, the split variant it took (holdout:
-- the journey's control group), and whether its steps were recorded (runs that ended before
-- this migration, or that were terminated from the Temporal UI, have no step rows).
ALTER TABLE runs
    ADD COLUMN last_step text,
    ADD COLUMN variant text,
    ADD COLUMN held_out boolean NOT NULL DEFAULT false,
    ADD COLUMN steps_recorded boolean NOT NULL DEFAULT false;

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

-- When the provider first said a message was delivered, opened, clicked (SendGrid's event
-- webhook), kept on the message where the feedback is applied; filled in from the feedback
-- events already accepted.
ALTER TABLE messages
    ADD COLUMN delivered_at timestamptz,
    ADD COLUMN opened_at timestamptz,
    ADD COLUMN clicked_at timestamptz;
UPDATE messages m SET delivered_at = f.delivered, opened_at = f.opened, clicked_at = f.clicked
FROM (
    SELECT customer_id, properties ->> 'key' AS key,
           min(occurred_at) FILTER (WHERE name = 'email_delivered') AS delivered,
           min(occurred_at) FILTER (WHERE name = 'email_opened') AS opened,
           min(occurred_at) FILTER (WHERE name = 'email_clicked') AS clicked
    FROM events WHERE name IN ('email_delivered', 'email_opened', 'email_clicked')
    GROUP BY 1, 2
) f
WHERE m.customer_id = f.customer_id AND m.key = f.key;

-- The report's reads: a journey's runs in order, a run's messages.
CREATE INDEX runs_by_journey ON runs (journey, customer_id, run_no) INCLUDE (started_at);
CREATE INDEX messages_by_run ON messages (journey, customer_id, run_no);
