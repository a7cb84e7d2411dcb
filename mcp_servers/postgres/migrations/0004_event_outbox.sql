-- One event truth (issue 18): every exposure get_variant serves and every result record_result
-- stores must reach the event store (ClickHouse), where every analysis reads. They travel through a
-- transactional outbox: the outbox row is written by the same statement that writes the assignment
-- or the result, so both exist or neither does; the relay (stream_processor/outbox.py) produces
-- unsent rows to Kafka as event-schema JSON, waits for the broker's acks, then marks them sent.
-- Event ids are deterministic and stored with the row, so a re-send is one event after FINAL.

-- When the user was first shown their variant (get_variant / assign_many with exposed = true, or an
-- SDK exposure event). NULL: assigned but not (yet) exposed, or a QA-forced user, who is never an
-- exposure. A later exposed call sets it once and writes the exposure's outbox row then.
ALTER TABLE neonblue.assignments ADD COLUMN IF NOT EXISTS exposed_at timestamptz;
-- Exposures reported by SDKs are events already: never relay them again.
UPDATE neonblue.assignments SET exposed_at = assigned_at WHERE source = 'exposure' AND exposed_at IS NULL;
COMMENT ON COLUMN neonblue.assignments.exposed_at IS
    'When the user was first exposed (served with exposed = true, or an SDK exposure); NULL = not exposed yet. Forced users are never exposures.';

-- The deterministic id of an event NeonBlue emits, from a name such as 'exposure:<experiment>:<user>':
-- the md5 of the name as a UUID (in Python: uuid.UUID(hashlib.md5(name.encode()).hexdigest())).
CREATE OR REPLACE FUNCTION neonblue.event_uuid(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT md5(name)::uuid::text $$;

CREATE TABLE IF NOT EXISTS neonblue.event_outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    event_type     text NOT NULL CHECK (event_type IN ('exposure', 'metric')),
    experiment_key text NOT NULL,
    variant_key    text NOT NULL,
    user_id        text NOT NULL,
    metric         text,
    value          double precision,
    occurred_at    timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    leased_until   timestamptz,
    sent_at        timestamptz,
    last_error     text,
    CHECK ((event_type = 'metric') = (metric IS NOT NULL AND value IS NOT NULL))
);
-- The relay's queue: only unsent rows, in write order.
CREATE INDEX IF NOT EXISTS event_outbox_unsent_idx ON neonblue.event_outbox (id) WHERE sent_at IS NULL;

COMMENT ON TABLE neonblue.event_outbox IS
    'Transactional outbox: exposures and results on their way to the event store (Kafka, then ClickHouse). Written with the assignment or result; sent_at is set once the broker acknowledged the event; sent rows are pruned after a day.';
COMMENT ON COLUMN neonblue.event_outbox.event_id IS
    'The event''s id in the event store: event_uuid(''exposure:<experiment>:<user>''), the caller''s result event_id, or event_uuid of the result row';
COMMENT ON COLUMN neonblue.event_outbox.leased_until IS 'A relay claimed the row until then; after it any relay may send it again';
COMMENT ON COLUMN neonblue.event_outbox.sent_at IS 'When the broker acknowledged the event; NULL = still to send';
