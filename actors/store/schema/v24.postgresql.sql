-- v24 (PostgreSQL): link in bio codes, as v24.sql (see there), and row-level security on
-- the v5 tables that hold a client's data through a parent row and had none: a post's
-- metrics (through its post), a conversation's messages (through the conversation), a
-- message's responses (through the message: the prompt and the reply are the client's),
-- a link's clicks (through the link). FORCEd like v14's; each parent's own policy decides,
-- so a caller sees these rows exactly when it sees the account they hang from.
ALTER TABLE link_in_bio ADD COLUMN code TEXT;
CREATE UNIQUE INDEX link_in_bio_code ON link_in_bio (code);

ALTER TABLE post_metrics ENABLE ROW LEVEL SECURITY;
ALTER TABLE post_metrics FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON post_metrics USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM content_posts p WHERE p.post_id = post_metrics.post_id));

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON messages USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM conversations c WHERE c.conversation_id = messages.conversation_id));

ALTER TABLE message_responses ENABLE ROW LEVEL SECURITY;
ALTER TABLE message_responses FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON message_responses USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM messages m WHERE m.message_id = message_responses.message_id));

ALTER TABLE link_clicks ENABLE ROW LEVEL SECURITY;
ALTER TABLE link_clicks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON link_clicks USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM link_in_bio l WHERE l.link_id = link_clicks.link_id));
