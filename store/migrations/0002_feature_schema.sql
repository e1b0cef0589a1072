-- The feature schema moves to package models: every row names the schema version its
-- features follow, and a feature that was not computed is NULL instead of a misleading 0
-- (prefix_match when no prefix plugin ran, KV geometry a replica did not report, max_tokens
-- a client did not set). Rows written before this carry version 1.
ALTER TABLE request_samples ADD COLUMN schema_version integer NOT NULL DEFAULT 1;
ALTER TABLE request_samples ALTER COLUMN schema_version DROP DEFAULT;
ALTER TABLE request_samples ALTER COLUMN prefix_match DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN num_gpu_blocks DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN block_size DROP NOT NULL;
ALTER TABLE request_samples ALTER COLUMN max_tokens DROP NOT NULL;
