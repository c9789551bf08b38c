"""The coordinator <-> node protocol: message schemas, codec, nng transport, node journal.

Modules: `messages` (typed msgspec Structs, `Envelope`, `PROTOCOL_VERSION`), `codec` (the only
encoder/decoder; `make_envelope`, `make_command`), `transport` (`CoordinatorLink`,
`NodeLink`, `EventSink`), `journal` (node-local SQLite `Journal`), `errors` (the project's
one exception family).

Delivery rules
==============

Connection
  - Nodes dial the coordinator; the coordinator's address is the only one a node needs. The
    dial does not block: a node may start before the coordinator, and nng redials by itself
    after any loss (back-off 0.1 .. 1 s by default). The link resumes without help.
  - Mutual challenge. On every new connection the coordinator sends ``challenge(nonce)``.
    The node's first message must be ``hello(node, proof, phones, last_acked_seq, nonce)``
    with its own fresh ``nonce`` and proof = `codec.link_proof` (HMAC-SHA256 under the
    node's key over the direction "node->coordinator", both nonces and the node name).
    The key is the node's own (``farm nodes add NAME``; the coordinator looks it up by
    name), or for a name that has none the shared farm secret (deprecated, one release).
    Anything else, a wrong proof, a revoked key or a name with no key and no shared secret
    gets ``refused(reason)``, an error log naming the peer address, and the connection
    closed. No hello within 5 s: connection closed. A good hello gets ``welcome(coordinator,
    last_seq, proof)``, proof = the same HMAC with the direction "coordinator->node": the
    node acts on nothing (commands, registry pushes, live watches) before that proof
    checked, and drops the connection, logged, when it is wrong or missing, so a process
    that took over the coordinator's address cannot drive the phones. Fresh nonces on both
    sides stop a recorded proof from being replayed; the direction label stops one side's
    proof from being reflected as the other's. The handshake authenticates the two ends,
    not each later message: against a machine in the middle, run the link over a private
    network or nng's tls+tcp.
  - A node of the one-way handshake (a hello without ``nonce``, proof = HMAC-SHA256(farm
    secret, nonce + node name)) is still accepted with the shared secret, with a warning.
  - Revoking a node's key drops its connection at once (``refused``) and refuses its next
    hellos.
  - A node name has one connection: a newer authenticated connection replaces the older.

Liveness
  - Both ends send ``heartbeat`` every 1 s; any valid message counts as a sign of life.
    A peer silent for more than 3 s, or whose connection closed, is dead: the coordinator
    reports ``node_down(name, reason)``, the node drops the connection and nng redials.
    Worst case from a peer's death to detection: 1 s + 3 s + one check period (< 5 s).
    Time our own event loop was held up (a check's lateness) is not the peer's silence: the
    messages that arrived meanwhile are read after the check, so it is not counted.

Messages
  - Every message is one `Envelope` ``{v, id, kind, src, dst, ts, body}`` in JSON, at most
    ``max_message_bytes`` (16 MiB by default). A message with another version, a body that
    does not fit its kind's schema, an unknown kind, bad JSON or over the size limit is
    dropped with an error log naming the peer; the connection stays up.

Commands (coordinator -> node): at-least-once, executed at most once
  - Each command has a ``command_id``. The coordinator re-sends the same command (same id)
    when no ``command_result`` came within the per-try timeout, and at once when the node
    reconnects, until a result arrives or the overall deadline passes (then DeliveryError).
  - The node runs a command_id once. A duplicate of a running command is ignored (its
    result follows); a duplicate of a finished one gets the cached result again (the last
    1024 results are kept). Exceptions of the handler become results: "gone" for a
    vanished device, "error" otherwise.

Events (node -> coordinator): journaled, re-sent until acked, delivered once to the sink
  - ``send_event`` writes the event to the node's SQLite journal (durable) before it returns;
    seq numbers increase per node and survive restarts.
  - One sender per node sends un-acked, committed events in seq order, on the current
    connection only, several to an ``event_batch`` message when the coordinator's welcome
    says ``event_batches`` (one ``event`` per message otherwise). After every welcome it
    starts again from the oldest un-acked event, and also re-sends when no ack progress was
    seen for 5 s. Its heartbeats carry ``sent_upto`` (the highest seq it had sent before):
    Pair1 drops a message when a pipe's queue is full, and a lost last event of a burst has
    no later event to show the gap, but the coordinator reads the heartbeat after the events
    sent before it and asks for what is missing.
  - The coordinator takes every event queued for a node at once: it drops an event whose seq
    is <= the sink's ``last_seq(node)`` (a duplicate) but still acks it; the run of new
    consecutive seqs goes to the sink (``handle_batch`` when it has one, else ``handle`` per
    event), then one ``event_ack(upto_seq)`` covers every seq up to it; the node then deletes
    those rows from its journal.
  - A seq past a gap is never stored (the ack that followed would cover the missing events):
    it and what follows are dropped and the ack says ``resend_from`` = the first missing seq;
    the node sends again from there at once. The one jump taken is up to ``hello.last_acked_seq``
    (the node deleted those events on an earlier ack; this store is behind, e.g. restored).
  - When the sink fails, nothing more is acked and the events after it are dropped unstored
    until the node re-sends from the failed seq (no ack progress for its ack timeout).
  - ``welcome.last_seq`` tells the node which seqs the coordinator already holds: the node
    forgets them before replaying; if it is above anything the journal ever assigned (the
    journal was lost), pending events are renumbered above it so none is taken for a
    duplicate.

Screen registry (coordinator -> node): state, not commands
  - ``hello.registry_version`` is the content hash of the node's registry. When it differs
    from the coordinator's, the coordinator sends every app, one ``registry_push`` per app
    (its JSON byte for byte and the files it names), so a node that was down during a save
    catches up on reconnecting. After each save the changed app goes to every connected node.
  - The node writes a push atomically (validated first), reloads its matcher and answers
    ``registry_applied(app, version, error)``. A lost push needs no re-send: pushes carry
    whole apps, and the next hello compares versions again.
"""
