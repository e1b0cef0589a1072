-- Feature schema 3: the work ahead as the picker knows it and where the replica's step cycle
-- is (see package models). Older rows have NULL here and their own schema_version.
ALTER TABLE request_samples
    ADD COLUMN uncached_input_tokens             integer,
    ADD COLUMN prefill_uncached_tokens_in_flight bigint,
    ADD COLUMN decode_tokens_left                bigint,
    ADD COLUMN last_token_age_ms                 double precision,
    ADD COLUMN request_rate                      double precision,
    ADD COLUMN uncached_token_rate               double precision,
    ADD COLUMN dispatched_since_scrape           integer,
    ADD COLUMN first_tokens_since_scrape         integer,
    ADD COLUMN finished_since_scrape             integer,
    -- the upper-quantile predictions the decision had, beside the mean ones
    ADD COLUMN predicted_ttft_upper_ms           double precision,
    ADD COLUMN predicted_tpot_upper_ms           double precision;

-- The trainer reads the samples of one feature schema.
CREATE INDEX request_samples_schema_time ON request_samples (schema_version, time);

-- Model versions, redone for the learning loop (the first table never held a row): every
-- model the trainer fitted, published or not, with its manifest (models.Manifest), the
-- binary model leaves loads and XGBoost's JSON model. At most one published model per target
-- and kind: the champion the pickers load.
DROP TABLE model_versions;
CREATE TABLE model_versions (
    version        text        PRIMARY KEY,
    run            text        NOT NULL,
    target         text        NOT NULL CHECK (target IN ('ttft', 'tpot')),
    kind           text        NOT NULL CHECK (kind IN ('mean', 'quantile')),
    quantile       double precision,
    schema_version integer     NOT NULL,
    created_at     timestamptz NOT NULL,
    parent         text,
    manifest       jsonb       NOT NULL,
    leaves         bytea       NOT NULL,
    xgboost_json   bytea       NOT NULL,
    published      boolean     NOT NULL DEFAULT false,
    published_at   timestamptz
);
CREATE UNIQUE INDEX model_versions_champion ON model_versions (target, kind) WHERE published;
CREATE INDEX model_versions_created ON model_versions (created_at DESC);
