-- Every request is a sample, also the ones never dispatched: flow control refused them (shed,
-- a full band, past the TTL or the deadline), the scheduler found no replica, or the client
-- left while they waited. Such a row has refused = true, no replica ('') and only the request's
-- own features; reason is the x-llm-d-request-dropped-reason it was answered with. queued_ms
-- is the time a request waited for admission, dispatched or not (NULL in older rows).
ALTER TABLE request_samples
    ADD COLUMN refused   boolean NOT NULL DEFAULT false,
    ADD COLUMN reason    text    NOT NULL DEFAULT '',
    ADD COLUMN queued_ms double precision;
ALTER TABLE request_samples ALTER COLUMN kv_cache_usage DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN num_requests_waiting DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN num_requests_running DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN inflight_requests DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN prefill_tokens_in_flight DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN decode_requests_in_flight DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN inflight_tokens DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN metrics_age_ms DROP NOT NULL;
-- A dispatched request still has every replica feature the picker always computes. Older
-- rows met this through NOT NULL: NOT VALID spares a scan of the whole table.
ALTER TABLE request_samples ADD CONSTRAINT request_samples_dispatched_features CHECK (
    refused OR (replica <> '' AND kv_cache_usage IS NOT NULL AND num_requests_waiting IS NOT NULL
        AND num_requests_running IS NOT NULL AND inflight_requests IS NOT NULL
        AND prefill_tokens_in_flight IS NOT NULL AND decode_requests_in_flight IS NOT NULL
        AND inflight_tokens IS NOT NULL AND metrics_age_ms IS NOT NULL)) NOT VALID;
