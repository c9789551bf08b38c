"""Engagement (issue 21.6): conversations read off the phones and links in bio.

`conversations` owns the conversations and messages tables (one conversation per account
and partner; only the new tail of what a phone read is appended), `ingest` turns the
nodes' ``messages_read`` events into those rows, `links` owns link_in_bio rows (with their
public code, schema v24) and their click counts, and `accounts` finds the accounts a
caller may name.
"""
