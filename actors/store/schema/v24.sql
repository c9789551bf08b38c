-- v24: link in bio codes (issue 21; actors/coordinator/engagement/links.py).
-- code: the short unguessable part of a link's public address /l/{code}; unique, so one
-- code leads to one link. A removed link keeps its row and its clicks (active_to is set).
ALTER TABLE link_in_bio ADD COLUMN code TEXT;
CREATE UNIQUE INDEX link_in_bio_code ON link_in_bio (code);
-- PostgreSQL (v24.postgresql.sql) also puts post_metrics, messages, message_responses and
-- link_clicks under row-level security through their parent rows.
