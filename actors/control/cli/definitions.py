"""`farm history`, `farm diff`, `farm revert`: a definition's versions (issue 23.1) over
``/api/definitions/{kind}/{name}/...``. KIND is sequence, workflow, schedule, screen or
caption; NAME the definition's (``clipshare/post_clip``; a screen ``clipshare/feed``).

`farm export --git DIR` writes the newest version of every definition into a Git repository
here (``GET /api/definitions``; one commit per definition changed since the last export,
actors.coordinator.definitions.git_export); `farm import --git DIR` reads such a checkout and
loads it as new versions (``POST /api/definitions/import``): a file that does not parse or
check is named with its JSON pointer, and then nothing is imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse

from actors.control.cli.client import (EXIT_OK, EXIT_REJECTED, FarmClient, RequestRejected,
                                       add_command)
from actors.control.cli.format import format_table

KINDS = ("sequence", "workflow", "schedule", "screen", "caption")


def _base(args: argparse.Namespace) -> str:
    return (f"/api/definitions/{args.kind}/"
            f"{urllib.parse.quote(args.name, safe='/')}")


def _query(args: argparse.Namespace, **more: str) -> str:
    query = {k: v for k, v in more.items()}
    if args.client:
        query["client"] = args.client
    return ("?" + urllib.parse.urlencode(query)) if query else ""


def _cmd_history(client: FarmClient, args: argparse.Namespace) -> int:
    out = client.get_json(f"{_base(args)}/versions{_query(args)}")
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"{out['kind']} {out['name']}" + (f" (client {out['client']})" if out.get("client")
                                             else ""))
    print(format_table([[str(v["version"]), v["created_at"][:19], v.get("author") or "(on disk)",
                         v["content_hash"][:12], v.get("reason") or ""]
                        for v in out["versions"]],
                       ["VERSION", "AT (UTC)", "WHO", "HASH", "REASON"]))
    return EXIT_OK


def _cmd_diff(client: FarmClient, args: argparse.Namespace) -> int:
    out = client.get_json(f"{_base(args)}/diff{_query(args, **{'from': args.old, 'to': args.new})}")
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"{out['kind']} {out['name']}: version {out['from']} -> {out['to']}")
    for op in out["changes"]:
        shown = {"add": f"+ {op['path']} = {json.dumps(op.get('value'))}",
                 "remove": f"- {op['path']} (was {json.dumps(op.get('was'))})",
                 "replace": f"~ {op['path']}: {json.dumps(op.get('was'))} -> "
                            f"{json.dumps(op.get('value'))}"}.get(
            op["op"], f"{op['op']} {op.get('from', '')} -> {op['path']}")
        print(f"  {shown}")
    for region in out.get("regions") or []:
        print(f"  region {region['region']}: {region['change']} "
              f"{region.get('from') or ''} -> {region.get('to') or ''}".rstrip(" ->"))
    files = out.get("files") or {}
    for name in files.get("added") or []:
        print(f"  + file {name}")
    for name in files.get("removed") or []:
        print(f"  - file {name}")
    if not out["changes"] and not any(files.values()):
        print("  no change")
    return EXIT_OK


def _cmd_revert(client: FarmClient, args: argparse.Namespace) -> int:
    head = client.post_json(f"{_base(args)}/revert{_query(args)}",
                            {"version": args.version, "reason": args.reason})
    print(f"{args.kind} {args.name}: version {head['version']} saved, equal to version "
          f"{args.version} ({head['content_hash'][:12]})")
    return EXIT_OK


def _cmd_export(client: FarmClient, args: argparse.Namespace) -> int:
    from actors.coordinator.definitions.git_export import export_to_git

    definitions = client.get_json("/api/definitions")["definitions"]
    commits = export_to_git(args.git, definitions)
    for c in commits:
        owner = f" ({c['client']})" if c.get("client") else ""
        print(f"{c['commit'][:12]} {c['kind']} {c['name']}{owner}: version {c['version']}")
    print(f"{len(commits)} commit(s); {len(definitions) - len(commits)} definition(s) unchanged")
    return EXIT_OK


def _cmd_import(client: FarmClient, args: argparse.Namespace) -> int:
    from actors.coordinator.definitions.git_export import read_tree

    items, problems = read_tree(args.git)
    if problems:
        for p in problems:
            print(f"{p.where}: {p.reason}", file=sys.stderr)
        print(f"{len(problems)} problem(s); nothing was imported", file=sys.stderr)
        return EXIT_REJECTED
    try:
        done = client.post_json("/api/definitions/import",
                                {"definitions": items, "reason": args.reason})
    except RequestRejected as exc:
        for p in (exc.body or {}).get("problems") or []:
            print(f"{p['where']}: {p['reason']}", file=sys.stderr)
        raise
    for entry in done["saved"]:
        owner = f" ({entry['client']})" if entry.get("client") else ""
        print(f"saved {entry['kind']} {entry['name']}{owner}")
    print(f"{len(done['saved'])} saved as new versions, {len(done['unchanged'])} unchanged")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("kind", choices=KINDS)
        p.add_argument("name", help="the definition's name, e.g. clipshare/post_clip")
        p.add_argument("--client", default=None,
                       help="whose definition, when several of your clients have one")

    p = add_command(sub, common, "history", "a definition's versions, newest first: who, "
                    "when, why", _cmd_history)
    target(p)
    p.add_argument("--json", action="store_true", help="the versions as JSON")
    p = add_command(sub, common, "diff", "what changed between two versions of a "
                    "definition", _cmd_diff)
    target(p)
    p.add_argument("old", help="the older version's number")
    p.add_argument("new", help="the newer version's number")
    p.add_argument("--json", action="store_true", help="the diff as JSON (RFC 6902 changes)")
    p = add_command(sub, common, "revert", "save a past version of a definition again, as "
                    "its newest", _cmd_revert)
    target(p)
    p.add_argument("version", type=int, help="the version to go back to")
    p.add_argument("--reason", required=True, help="why (kept in the history and the audit)")
    p = add_command(sub, common, "templates", "workflow and sequence templates across an "
                    "organization's clients: list, status (copies behind their template), "
                    "add, remove, copy, update", _cmd_templates)
    p.add_argument("action", nargs="?", default="list",
                   choices=("list", "status", "add", "remove", "copy", "update"))
    p.add_argument("target", nargs="*", metavar="[workflow|sequence] NAME",
                   help="the definition (a workflow unless the kind is given)")
    p.add_argument("--client", default=None,
                   help="the template's client (add, remove; copy: when several have one) "
                        "or the copy's (update)")
    p.add_argument("--to-client", dest="to_client", default=None, help="copy: into this client")
    p = add_command(sub, common, "export", "write every definition into a Git repository, "
                    "one commit per definition changed since the last export", _cmd_export)
    p.add_argument("--git", required=True, metavar="DIR",
                   help="the repository (made with git init when it is none)")
    p = add_command(sub, common, "import", "load the definitions of an exported Git "
                    "checkout as new versions (super users)", _cmd_import)
    p.add_argument("--git", required=True, metavar="DIR", help="the checkout")
    p.add_argument("--reason", default="farm import", help="why (kept in the history)")


def _cmd_templates(client: FarmClient, args: argparse.Namespace) -> int:
    """farm templates [list|status|add|remove|copy|update]."""
    action = args.action
    words = list(args.target)
    args.kind = words.pop(0) if words and words[0] in ("workflow", "sequence") else "workflow"
    args.name = words.pop(0) if words else None
    if action in ("add", "remove", "copy", "update") and (not args.name or words):
        print(f"farm templates {action}: give [workflow|sequence] NAME", file=sys.stderr)
        return EXIT_REJECTED
    if action == "add":
        client.post_json("/api/templates", {"kind": args.kind, "name": args.name,
                                            "client": args.client})
        print(f"{args.kind} {args.name} is a template")
    elif action == "remove":
        client.delete_json(f"/api/templates/{args.kind}/{urllib.parse.quote(args.name)}"
                           + _query(args))
        print(f"{args.kind} {args.name} is no longer a template")
    elif action == "copy":
        if not args.to_client:
            print("farm templates copy: give --to-client", file=sys.stderr)
            return EXIT_REJECTED
        done = client.post_json("/api/templates/copy", {
            "kind": args.kind, "name": args.name, "from_client": args.client,
            "to_client": args.to_client})
        print(f"{args.kind} {args.name} copied to {done['client']} (template version "
              f"{done['origin_version']}, copy version {done['copy_version']})")
    elif action == "update":
        if not args.client:
            print("farm templates update: give --client (the copy's)", file=sys.stderr)
            return EXIT_REJECTED
        try:
            done = client.post_json("/api/templates/update", {
                "kind": args.kind, "name": args.name, "client": args.client})
        except RequestRejected as exc:
            diff = (exc.body or {}).get("diff")
            if diff:  # an edited copy: what the template changed, to merge by hand
                print(json.dumps(diff, indent=2, ensure_ascii=False))
            raise
        print(f"{args.kind} {args.name} of {args.client}: " + (
            f"now template version {done['origin_version']} (copy version "
            f"{done['copy_version']})" if done["updated"] else "already current"))
    else:
        out = client.get_json("/api/templates")
        if action == "list":
            print(format_table([[t["kind"], t["name"], t.get("client") or "(shared)"]
                                for t in out["templates"]], ["KIND", "NAME", "CLIENT"]))
        copies = [c for c in out["copies"] if action == "list" or c["behind"]]
        if action == "list" and copies:
            print()
        if not copies:
            print("no copy is behind its template" if action == "status" else "no copies")
            return EXIT_OK
        print(format_table([[c["kind"], c["name"], c["client"], c.get("origin_client") or "-",
                             f"{c['origin_version']}/{c['origin_latest']}",
                             "behind" if c["behind"] else "current",
                             "edited" if c["edited"] else "-"] for c in copies],
                           ["KIND", "NAME", "CLIENT", "FROM", "VERSION/NOW", "STATE",
                            "EDITED"]))
    return EXIT_OK
