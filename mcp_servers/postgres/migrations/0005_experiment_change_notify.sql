-- Every committed change to an experiment row (and so, through 0003's trigger, to its variants)
-- is announced on the channel `neonblue_experiments` with the experiment id as payload.
-- Servers cache experiment definitions and returning users' recorded assignments, and
-- answer get_variant from memory while they LISTEN: a notification drops the cached
-- definition (and the assignments cached with it) in every process. PostgreSQL delivers
-- notifications only after commit, in commit order, once per transaction and payload.
CREATE OR REPLACE FUNCTION neonblue.notify_experiment_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('neonblue_experiments', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS experiments_notify_change ON neonblue.experiments;
CREATE TRIGGER experiments_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON neonblue.experiments
    FOR EACH ROW EXECUTE FUNCTION neonblue.notify_experiment_change();
