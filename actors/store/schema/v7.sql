-- v7: screen discovery proposals (spec 6.1-6.3, actors.discovery). One row per queued unknown
-- screen: its review status (proposed, approved, discarded, failed) and the proposal itself
-- (name, description, kind, app, validation regions, action boxes, how it was made, timings)
-- as one JSON document, since the operator edits it as a whole.
CREATE TABLE screen_proposals (
    proposal_id INTEGER PRIMARY KEY,
    unknown_screen_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'proposed'
        CHECK (status IN ('proposed', 'approved', 'discarded', 'failed')),
    proposal TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    resolved_by TEXT
);
CREATE INDEX screen_proposals_status ON screen_proposals (status, proposal_id);
