"""`farm audit`: the audit trail (GET /api/audit), newest first, one change a line: when, who,
what (action, entity type and id) and why; ``--json`` prints the entries with their
before/after states.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse

from actors.control.cli.client import EXIT_OK, FarmClient, add_command
from actors.control.cli.format import format_table


def _cmd_audit(client: FarmClient, args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    for name in ("entity", "entity_id", "since"):
        if getattr(args, name):
            query[name] = getattr(args, name)
    entries = client.get_json("/api/audit?" + urllib.parse.urlencode(query))["entries"]
    if args.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not entries:
        print("no audit entries")
        return EXIT_OK
    print(format_table([[e["at"][:19], e.get("actor") or "-", e["action"], e["entity_type"],
                         e.get("entity_id") or "-", e.get("reason") or ""] for e in entries],
                       ["AT (UTC)", "WHO", "ACTION", "ENTITY", "ID", "REASON"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "audit", "who changed what and when (the audit trail, newest "
                    "first; your clients' entities unless you are a super user)", _cmd_audit)
    p.add_argument("--entity", default=None,
                   help="only this entity type: sequence, workflow, account, profile, phone, "
                        "client, ai_key, user, group, screen ...")
    p.add_argument("--entity-id", dest="entity_id", default=None, help="only this entity")
    p.add_argument("--since", default=None,
                   help="only changes since: a duration back from now (2d, 12h, 30m) or an "
                        "ISO UTC time")
    p.add_argument("--limit", type=int, default=50, help="entries listed (default 50)")
    p.add_argument("--json", action="store_true", help="the entries as JSON, with before/after")
