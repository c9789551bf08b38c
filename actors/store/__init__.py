"""The coordinator's databases: the farm database and its schema, the event store, the
single writer, retention."""
