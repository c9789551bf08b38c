"""`farm alerts`: the farm's alerts and their rules through the API (issue 19.3).

    farm alerts [list] [--firing] [--limit N] [--json]   alerts, newest first
    farm alerts ack ID                                   stop an alert repeating
    farm alerts silence RULE --for 2h                    send nothing of RULE for a while
                                                         (--for 0s ends the silence)
    farm alerts rules [--json]                           the rules (file and API)
    farm alerts channels [--json]                        channels: pending, last error
"""

from __future__ import annotations

import argparse
import json
from urllib.parse import quote

from actors.control.cli.client import EXIT_OK, FarmClient, add_command
from actors.control.cli.format import format_table


def _short(text: str | None, width: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _cmd_alerts(client: FarmClient, args: argparse.Namespace) -> int:
    action = args.action or "list"
    if action == "ack":
        if not args.target or not args.target.isdigit():
            raise SystemExit("farm alerts ack: give the alert's id (farm alerts list)")
        alert = client.post_json(f"/api/alerts/{args.target}/ack", {})
        print(f"alert {alert['id']} acked by {alert['acked_by']}: {alert['title']}")
        return EXIT_OK
    if action == "silence":
        if not args.target or not args.for_:
            raise SystemExit("farm alerts silence: give the rule's name and --for (e.g. 2h)")
        out = client.post_json(f"/api/alerts/rules/{quote(args.target, safe='')}/silence",
                               {"for": args.for_})
        until = out.get("silenced_until")
        print(f"rule {out['rule']} silenced until {until}" if until
              else f"rule {out['rule']}: silence ended")
        return EXIT_OK
    if action == "rules":
        answer = client.get_json("/api/alerts/rules")
        if args.json:
            print(json.dumps(answer, indent=2))
            return EXIT_OK
        common = {"rule_id", "name", "kind", "client", "source", "enabled", "repeat",
                  "channels", "silenced_until", "silenced_by"}
        rows = [[r["name"], r["kind"], r.get("client") or "(farm)", r["source"],
                 "yes" if r["enabled"] else "no", r.get("repeat") or "never",
                 ", ".join(f"{k}={v}" for k, v in r.items() if k not in common and v is not None),
                 ",".join(r["channels"]) if r.get("channels") else "all",
                 r.get("silenced_until") and f"until {r['silenced_until']}" or ""]
                for r in answer["rules"]]
        print(format_table(rows, ["RULE", "KIND", "CLIENT", "FROM", "ON", "REPEAT", "FIELDS",
                                  "CHANNELS", "SILENCED"]))
        return EXIT_OK
    if action == "channels":
        answer = client.get_json("/api/alerts/channels")
        if args.json:
            print(json.dumps(answer, indent=2))
            return EXIT_OK
        rows = [[c["name"], c["type"], str(c["pending"]), str(c["delivered"]),
                 str(c["expired"]), c.get("last_delivered_at") or "",
                 _short(c.get("last_error"), 50)] for c in answer["channels"]]
        print(format_table(rows, ["CHANNEL", "TYPE", "PENDING", "DELIVERED", "EXPIRED",
                                  "LAST DELIVERED", "LAST ERROR"]))
        return EXIT_OK
    query = f"/api/alerts?limit={args.limit}" + ("&state=firing" if args.firing else "")
    answer = client.get_json(query)
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    rows = [[str(a["id"]), a["state"], a["rule"], a["subject"], a["since"],
             a.get("acked_by") or "", _short(a["title"])] for a in answer["alerts"]]
    print(format_table(rows, ["ID", "STATE", "RULE", "SUBJECT", "SINCE", "ACKED", "TITLE"]))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "alerts",
                    "the farm's alerts: list (default), ack ID, silence RULE --for 2h, rules, "
                    "channels (their pending notices and last error)", _cmd_alerts)
    p.add_argument("action", nargs="?", choices=["list", "ack", "silence", "rules", "channels"])
    p.add_argument("target", nargs="?", metavar="ID|RULE",
                   help="the alert's id (ack) or the rule's name (silence)")
    p.add_argument("--for", dest="for_", metavar="DURATION",
                   help="silence: how long (30m, 2h, 1d; 0s ends a silence)")
    p.add_argument("--firing", action="store_true", help="list: firing alerts only")
    p.add_argument("--limit", type=int, default=50, help="list: at most N (default 50)")
    p.add_argument("--json", action="store_true", help="the API's answer as JSON")
