-- Every routed request: the chosen replica's features at decision time, the prediction used
-- (when a predictor was), the request's objectives and what was observed. The trainer reads
-- time windows of it; operators query it.
CREATE TABLE request_samples (
    time                     timestamptz      NOT NULL, -- when the decision was sent
    request_id               text             NOT NULL,
    model                    text             NOT NULL,
    objective                text             NOT NULL DEFAULT '',
    fairness_id              text             NOT NULL DEFAULT '',
    stream                   boolean          NOT NULL,
    replica                  text             NOT NULL,
    replica_address          text             NOT NULL,
    replica_class            text             NOT NULL DEFAULT '',
    -- the primary failed and a fallback served: the features below are the primary's
    served_by_fallback       boolean          NOT NULL DEFAULT false,
    -- features of the chosen replica at decision time
    kv_cache_usage           double precision NOT NULL, -- 0..1, vllm:kv_cache_usage_perc
    num_requests_waiting     integer          NOT NULL,
    num_requests_running     integer          NOT NULL,
    prefix_match             double precision NOT NULL, -- share of prompt blocks the prefix record expects cached
    inflight_requests        integer          NOT NULL, -- this picker's, dispatched and not finished
    prefill_tokens_in_flight bigint           NOT NULL,
    decode_requests_in_flight integer         NOT NULL,
    inflight_tokens          bigint           NOT NULL,
    metrics_age_ms           double precision NOT NULL,
    num_gpu_blocks           integer          NOT NULL,
    block_size               integer          NOT NULL,
    input_tokens             integer          NOT NULL, -- estimated by the token rule
    max_tokens               integer          NOT NULL, -- 0 when the client set none
    -- objectives (NULL: none)
    slo_ttft_ms              double precision,
    slo_tpot_ms              double precision,
    -- the prediction used (NULL until a predictor routes)
    predicted_ttft_ms        double precision,
    predicted_tpot_ms        double precision,
    model_version            text,
    -- observed
    decision_us              double precision NOT NULL,
    ttft_ms                  double precision, -- NULL when not measured (non-streaming)
    tpot_ms                  double precision, -- NULL with fewer than two tokens
    e2e_ms                   double precision NOT NULL,
    prompt_tokens_reported   integer,
    cached_tokens_reported   integer,
    output_tokens            integer          NOT NULL,
    outcome                  text             NOT NULL,
    status                   integer          NOT NULL
);

-- The trainer reads time windows, sometimes per model or class.
CREATE INDEX request_samples_time ON request_samples USING brin (time);
CREATE INDEX request_samples_model_time ON request_samples (model, time);

-- Models the trainer fitted; the predictor loads the promoted one of each kind.
CREATE TABLE model_versions (
    id           bigserial   PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('ttft', 'tpot')),
    version      text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    trained_from timestamptz,
    trained_to   timestamptz,
    rows_used    bigint,
    metrics      jsonb       NOT NULL DEFAULT '{}',
    artifact     bytea       NOT NULL,
    promoted     boolean     NOT NULL DEFAULT false
);
CREATE INDEX model_versions_kind_created ON model_versions (kind, created_at DESC);
-- At most one promoted model of each kind: the one the predictor loads.
CREATE UNIQUE INDEX model_versions_one_promoted ON model_versions (kind) WHERE promoted;
