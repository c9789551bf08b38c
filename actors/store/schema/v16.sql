-- v16: metrics (issue 19): an access token may carry a scope. NULL is a token of its user's
-- full role; 'metrics' may call GET /metrics only (actors/access/policy.py), the token a
-- Prometheus server is given.
ALTER TABLE auth_tokens ADD COLUMN scope TEXT CHECK (scope IS NULL OR scope IN ('metrics'));
