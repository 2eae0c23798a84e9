-- Migration 10: `kairos report` read from rollups kept at write time, not from every run.
-- Applied by `kairos db upgrade`; back-fills the rollups from the rows already there.
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

-- The back-fill: every customer's journeys as their rows say now.
SELECT kairos_report_refresh(array_agg(customer_id), array_agg(journey), false)
FROM journey_entries;
SELECT kairos_report_refresh_stages(array_agg(id), false) FROM customers;
SELECT kairos_report_compact();
