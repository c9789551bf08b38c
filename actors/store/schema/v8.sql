-- v8: AI endpoint keys per client / organization (spec 16.4) and the coordinator's
-- phone pause (recovery's "pause the phone after repeated failures", spec 12.3.3).
-- api_keys keeps the spec's columns (encrypted_key: ciphertext under the farm master key,
-- key_identifier: the masked key); an OpenAI-compatible key also needs its endpoint.
ALTER TABLE api_keys ADD COLUMN base_url TEXT;
ALTER TABLE api_keys ADD COLUMN model TEXT;
ALTER TABLE api_keys ADD COLUMN label TEXT;
CREATE INDEX api_keys_status ON api_keys (status, service_name);

-- A phone the coordinator paused: why (e.g. recovery_failures) and since when; NULL = not
-- paused. Kept apart from phones.status (the registry's active/retired).
ALTER TABLE phones ADD COLUMN paused_reason TEXT;
ALTER TABLE phones ADD COLUMN paused_at TIMESTAMP;
ALTER TABLE phones ADD COLUMN paused_detail TEXT;
