-- Streamed exposures the hash agrees with cost no assignment row.
--
-- An SDK that reports over Kafka that it showed a user the variant the registry's hash gives (or the
-- user's QA-forced variant) tells the registry nothing get_variant would not answer anyway, as long as
-- the hash stays the truth (NOT hash_divergent, migration 0006) and the experiment has no targeting.
-- Such exposures are kept as one row per (experiment, stream flush), the users and variants as arrays:
-- about a microsecond per exposure, where an assignment row costs 17-23 (unique check, three indexes,
-- two foreign keys). The analyses read exposures from ClickHouse's events, not from here.
--
-- The moment the hash may stop being the truth (hash_divergent turns true: weights changed after the
-- start, a user un-forced, an SDK reported a variant the hash does not give), the trigger below turns
-- every kept exposure of that experiment into an assignment row, in the same transaction, before any
-- get_variant can read the new definition: the users keep the variant they were shown (the first
-- assignment wins, ON CONFLICT DO NOTHING). The stream processor writes here only while holding the
-- experiment row FOR SHARE at the revision it hashed with, so a change cannot slip in between.
CREATE TABLE IF NOT EXISTS neonblue.streamed_exposures (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id bigint NOT NULL REFERENCES neonblue.experiments (id) ON DELETE CASCADE,
    user_ids      text[] NOT NULL,
    variant_ids   bigint[] NOT NULL,
    exposed_at    timestamptz[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(user_ids) = cardinality(variant_ids) AND cardinality(user_ids) = cardinality(exposed_at))
);
CREATE INDEX IF NOT EXISTS streamed_exposures_experiment_idx ON neonblue.streamed_exposures (experiment_id, id);
-- Arrays of ids compress little and are read whole: keep them out of line, uncompressed.
ALTER TABLE neonblue.streamed_exposures ALTER COLUMN user_ids SET STORAGE EXTERNAL;
COMMENT ON TABLE neonblue.streamed_exposures IS
    'Kafka exposures whose variant is what the hash gives (no assignment row needed while the experiment is not hash_divergent); turned into assignments when it becomes divergent. Query known_assignments for every assignment.';

-- Every assignment the registry knows: the recorded rows, and each kept streamed exposure of a user who
-- has no row (their first, by time). What assignment counts and results read.
CREATE OR REPLACE VIEW neonblue.known_assignments AS
SELECT experiment_id, user_id, variant_id, source, bucket, assigned_at, exposed_at
FROM neonblue.assignments
UNION ALL
(SELECT DISTINCT ON (s.experiment_id, x.user_id)
       s.experiment_id, x.user_id, x.variant_id, 'exposure'::text, NULL::double precision, x.exposed_at, x.exposed_at
FROM neonblue.streamed_exposures s
CROSS JOIN LATERAL unnest(s.user_ids, s.variant_ids, s.exposed_at) AS x(user_id, variant_id, exposed_at)
WHERE NOT EXISTS (SELECT 1 FROM neonblue.assignments a WHERE a.experiment_id = s.experiment_id AND a.user_id = x.user_id)
ORDER BY s.experiment_id, x.user_id, x.exposed_at);
COMMENT ON VIEW neonblue.known_assignments IS
    'Every assignment: the assignments table plus streamed exposures kept without a row (see streamed_exposures).';

COMMENT ON TABLE neonblue.assignments IS
    'Which variant each user got: at most one row per (experiment, user); the first assignment wins. source: hash, forced (QA override, excluded from analysis) or exposure (reported by an SDK). Streamed exposures the hash agrees with have no row until the hash stops being the truth (see streamed_exposures): count users in known_assignments.';

CREATE OR REPLACE FUNCTION neonblue.materialise_streamed_exposures() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO neonblue.assignments (experiment_id, user_id, variant_id, source, assigned_at, exposed_at)
    SELECT NEW.id, x.user_id, x.variant_id, 'exposure', x.exposed_at, x.exposed_at
    FROM neonblue.streamed_exposures s
    CROSS JOIN LATERAL unnest(s.user_ids, s.variant_ids, s.exposed_at) WITH ORDINALITY AS x(user_id, variant_id, exposed_at, n)
    JOIN neonblue.variants v ON v.id = x.variant_id AND v.experiment_id = NEW.id
    WHERE s.experiment_id = NEW.id
    ORDER BY s.id, x.n
    ON CONFLICT (experiment_id, user_id) DO NOTHING;
    DELETE FROM neonblue.streamed_exposures WHERE experiment_id = NEW.id;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS materialise_streamed_exposures ON neonblue.experiments;
CREATE TRIGGER materialise_streamed_exposures
    AFTER UPDATE ON neonblue.experiments
    FOR EACH ROW WHEN (NEW.hash_divergent AND NOT OLD.hash_divergent)
    EXECUTE FUNCTION neonblue.materialise_streamed_exposures();
