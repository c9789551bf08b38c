"""Content data (issue 21.2/21.3): the node's read events into posts, metrics and account
health rows (store.py), health states (health.py), and the service that ingests and rolls
up daily (service.py)."""
