-- Feature schema 4: the replica's pace as its token streams show it, the load of the last
-- seconds, and which step the work in flight is in (see package models). Older rows have
-- NULL here and their own schema_version.
ALTER TABLE request_samples
    ADD COLUMN step_ms                      double precision,
    ADD COLUMN step_slow_ms                 double precision,
    ADD COLUMN last_step_ms                 double precision,
    ADD COLUMN step_wait_ms                 double precision,
    ADD COLUMN request_rate_fast            double precision,
    ADD COLUMN uncached_token_rate_fast     double precision,
    ADD COLUMN step_age_ms                  double precision,
    ADD COLUMN next_step_requests           integer,
    ADD COLUMN next_step_uncached_tokens    bigint,
    ADD COLUMN current_step_uncached_tokens bigint,
    ADD COLUMN decode_context_tokens        bigint;
