-- get_variant answers a new user from the cached definition and the hash alone, and records the
-- assignment off the latency path, but only while every recorded assignment of the experiment is what
-- the current hash gives (or belongs to a QA-forced user): then a user this process has not seen either
-- has no assignment or has exactly that one. hash_divergent says that may no longer hold, and sends
-- every new user of the experiment through the database again (read, then record), for good:
--   * the variants or their weights changed after the start (set_variant_weights, or any SQL);
--   * the seed, hash version, coverage or namespace changed after the start (any SQL);
--   * a user left forced_variations (their forced assignment stays recorded and wins);
--   * SDKs reported exposures (their variant is what the SDK chose): set by the store's insert_exposures.
-- Setting it updates the experiment row, so migration 0005 announces it to every process.
ALTER TABLE neonblue.experiments ADD COLUMN IF NOT EXISTS hash_divergent boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN neonblue.experiments.hash_divergent IS
    'True when a recorded assignment may differ from what the current hash gives (weights changed after start, SDK exposures, a user un-forced): get_variant then reads every new user''s record first.';

CREATE OR REPLACE FUNCTION neonblue.variants_diverge() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE neonblue.experiments SET hash_divergent = true
    WHERE id = COALESCE(NEW.experiment_id, OLD.experiment_id) AND status <> 'draft' AND NOT hash_divergent;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS variants_diverge ON neonblue.variants;
CREATE TRIGGER variants_diverge
    AFTER INSERT OR DELETE OR UPDATE OF weight, position, experiment_id ON neonblue.variants
    FOR EACH ROW EXECUTE FUNCTION neonblue.variants_diverge();

CREATE OR REPLACE FUNCTION neonblue.experiment_diverges() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'draft' AND NOT NEW.hash_divergent AND (
        NEW.hash_seed IS DISTINCT FROM OLD.hash_seed OR NEW.hash_version IS DISTINCT FROM OLD.hash_version
        OR NEW.coverage IS DISTINCT FROM OLD.coverage OR NEW.namespace IS DISTINCT FROM OLD.namespace
        OR NEW.namespace_start IS DISTINCT FROM OLD.namespace_start
        OR NEW.namespace_end IS DISTINCT FROM OLD.namespace_end
        OR EXISTS (SELECT 1 FROM jsonb_object_keys(OLD.forced_variations) k(user_id)
                   WHERE NOT NEW.forced_variations ? k.user_id)) THEN
        NEW.hash_divergent := true;
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS experiments_diverge ON neonblue.experiments;
CREATE TRIGGER experiments_diverge
    BEFORE UPDATE ON neonblue.experiments
    FOR EACH ROW EXECUTE FUNCTION neonblue.experiment_diverges();
