-- v14: row-level security for tenant isolation (spec 16.1, issue 18.2), and JSON columns
-- as JSONB: both PostgreSQL only (v14.postgresql.sql). SQLite has no row-level security
-- (there the scoped views' filters, actors/access/scoped.py, are the guard) and keeps
-- JSON as text; this file only moves its version number.
SELECT 1;
