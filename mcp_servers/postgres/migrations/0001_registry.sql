-- The experiment registry: experiments, variants, assignments, per-user results,
-- the decision audit trail and the experiment change log. All in schema `neonblue`
-- so the registry can share a database with an application without name clashes.

CREATE SCHEMA IF NOT EXISTS neonblue;

CREATE TABLE IF NOT EXISTS neonblue.experiments (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key                      text NOT NULL UNIQUE CHECK (key ~ '^[A-Za-z][A-Za-z0-9_.-]{0,99}$'),
    name                     text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description              text NOT NULL DEFAULT '',
    hypothesis               text NOT NULL DEFAULT '',
    type                     text NOT NULL
                             CHECK (type IN ('prompt', 'model', 'agent_config', 'feature', 'ui', 'workflow')),
    status                   text NOT NULL DEFAULT 'draft'
                             CHECK (status IN ('draft', 'running', 'stopped', 'concluded', 'archived')),
    primary_metric           text NOT NULL,
    primary_metric_direction text NOT NULL DEFAULT 'higher' CHECK (primary_metric_direction IN ('higher', 'lower')),
    secondary_metrics        jsonb NOT NULL DEFAULT '[]'::jsonb,
    guardrail_metrics        jsonb NOT NULL DEFAULT '[]'::jsonb,
    targeting                jsonb,
    coverage                 double precision NOT NULL DEFAULT 1 CHECK (coverage >= 0 AND coverage <= 1),
    namespace                text,
    namespace_start          double precision,
    namespace_end            double precision,
    hash_seed                text NOT NULL,
    hash_version             smallint NOT NULL DEFAULT 2 CHECK (hash_version IN (1, 2)),
    min_sample_size          integer NOT NULL DEFAULT 0 CHECK (min_sample_size >= 0),
    winner                   text,
    forced_variations        jsonb NOT NULL DEFAULT '{}'::jsonb,
    owner                    text,
    tags                     text[] NOT NULL DEFAULT '{}',
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    started_at               timestamptz,
    stopped_at               timestamptz,
    concluded_at             timestamptz,
    archived_at              timestamptz,
    CONSTRAINT experiments_namespace_complete CHECK (
        (namespace IS NULL AND namespace_start IS NULL AND namespace_end IS NULL)
        OR (namespace IS NOT NULL AND namespace_start >= 0 AND namespace_end <= 1
            AND namespace_start < namespace_end)
    )
);
CREATE INDEX IF NOT EXISTS experiments_status_idx ON neonblue.experiments (status, created_at DESC);
CREATE INDEX IF NOT EXISTS experiments_tags_idx ON neonblue.experiments USING gin (tags);

CREATE TABLE IF NOT EXISTS neonblue.variants (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id bigint NOT NULL REFERENCES neonblue.experiments (id) ON DELETE CASCADE,
    position      smallint NOT NULL CHECK (position >= 0),
    key           text NOT NULL CHECK (key ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    name          text NOT NULL,
    is_control    boolean NOT NULL DEFAULT false,
    weight        double precision NOT NULL CHECK (weight >= 0 AND weight <= 1),
    config        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (experiment_id, key),
    UNIQUE (experiment_id, position)
);
CREATE UNIQUE INDEX IF NOT EXISTS variants_one_control_idx ON neonblue.variants (experiment_id) WHERE is_control;

-- The declared winner must be one of the experiment's own variants.
DO $$
BEGIN
    ALTER TABLE neonblue.experiments
        ADD CONSTRAINT experiments_winner_fk FOREIGN KEY (id, winner)
        REFERENCES neonblue.variants (experiment_id, key);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS neonblue.assignments (
    experiment_id bigint NOT NULL REFERENCES neonblue.experiments (id) ON DELETE CASCADE,
    user_id       text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 256),
    variant_id    bigint NOT NULL REFERENCES neonblue.variants (id),
    source        text NOT NULL DEFAULT 'hash' CHECK (source IN ('hash', 'forced', 'exposure')),
    bucket        double precision,
    attributes    jsonb,
    assigned_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, user_id)
);
CREATE INDEX IF NOT EXISTS assignments_variant_idx ON neonblue.assignments (experiment_id, variant_id);
CREATE INDEX IF NOT EXISTS assignments_user_idx ON neonblue.assignments (user_id);

CREATE TABLE IF NOT EXISTS neonblue.results (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id bigint NOT NULL REFERENCES neonblue.experiments (id) ON DELETE CASCADE,
    variant_id    bigint NOT NULL REFERENCES neonblue.variants (id),
    user_id       text NOT NULL,
    metric_name   text NOT NULL,
    metric_value  double precision NOT NULL,
    event_id      text,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (experiment_id, event_id)
);
CREATE INDEX IF NOT EXISTS results_metric_idx ON neonblue.results (experiment_id, metric_name, variant_id);

CREATE TABLE IF NOT EXISTS neonblue.decisions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id bigint REFERENCES neonblue.experiments (id) ON DELETE CASCADE,
    action        text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]{0,63}$'),
    inputs        jsonb NOT NULL DEFAULT '{}'::jsonb,
    reasoning     text NOT NULL,
    confidence    double precision CHECK (confidence >= 0 AND confidence <= 1),
    actor         text NOT NULL,
    applied       boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS decisions_experiment_idx ON neonblue.decisions (experiment_id, created_at DESC);

CREATE TABLE IF NOT EXISTS neonblue.experiment_changes (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id bigint NOT NULL REFERENCES neonblue.experiments (id) ON DELETE CASCADE,
    change_type   text NOT NULL,
    actor         text NOT NULL,
    changes       jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS experiment_changes_idx ON neonblue.experiment_changes (experiment_id, id);

COMMENT ON TABLE neonblue.experiments IS
    'One row per experiment. key is the public handle (the experiment_id in events). status: draft, running, stopped, concluded, archived.';
COMMENT ON TABLE neonblue.variants IS
    'Arms of an experiment, in bucket order (position). weight = traffic share; config = JSON served to the user (e.g. system_prompt, model).';
COMMENT ON TABLE neonblue.assignments IS
    'Which variant each user got: one row per (experiment, user); the first assignment wins. source: hash, forced (QA override, excluded from analysis) or exposure (reported by an SDK).';
COMMENT ON TABLE neonblue.results IS
    'Per-user metric measurements (metric_name, metric_value) attributed to the user''s assigned variant.';
COMMENT ON TABLE neonblue.decisions IS
    'Audit trail: every recommendation or automated action with its inputs, reasoning, confidence and actor.';
COMMENT ON TABLE neonblue.experiment_changes IS
    'Change log of experiments: created, updated, started, stopped, concluded, archived, weights_changed.';
COMMENT ON COLUMN neonblue.experiments.coverage IS 'Fraction of eligible users enrolled (0..1).';
COMMENT ON COLUMN neonblue.experiments.targeting IS 'Condition on user attributes, e.g. {"country": {"$in": ["US"]}}; NULL = everyone.';
COMMENT ON COLUMN neonblue.experiments.hash_seed IS 'Seed of the GrowthBook-compatible hash (defaults to the key).';
COMMENT ON COLUMN neonblue.experiments.winner IS 'Key of the declared winning variant, when concluded.';
