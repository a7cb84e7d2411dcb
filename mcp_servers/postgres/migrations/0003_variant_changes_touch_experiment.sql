-- Any change to an experiment's variants also updates the experiment row, so the
-- row version (xmin) and updated_at change whenever anything that affects
-- assignment changes. Servers cache experiment definitions and check that
-- version on every get_variant, in the same round trip that records the assignment.
CREATE OR REPLACE FUNCTION neonblue.touch_experiment() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE neonblue.experiments SET updated_at = now()
    WHERE id = COALESCE(NEW.experiment_id, OLD.experiment_id);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS variants_touch_experiment ON neonblue.variants;
CREATE TRIGGER variants_touch_experiment
    AFTER INSERT OR UPDATE OR DELETE ON neonblue.variants
    FOR EACH ROW EXECUTE FUNCTION neonblue.touch_experiment();
