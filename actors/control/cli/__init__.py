"""`farm`: the operator's command line over the control endpoint's HTTP API.

Owns turning commands into HTTP requests (standard library urllib only, so the CLI starts
fast and needs nothing beyond Python) and their results into terminal lines. The `registry`
commands work locally on a registry folder, no endpoint involved (they import the registry
modules, OpenCV included, only when run).

This package wires the parser and runs a command (`main`); `client` holds `FarmClient` (the
HTTP plumbing), the exit statuses and `add_command`; `format` the table and line helpers; each
command group is a module registering its subcommands with `add_commands(sub, common)`:
`phones` (phones, actions, screenshot, watch), `runs` (run, runs, workflows, workflow run),
`ai` (recovery, resume, ai-keys), `audit`, `schedule`, `groups`, `registry`, `variables` (vars),
`retention`, `db` (schema status and migrate), `nodes` (nodes and their keys) and `people`
(login, users, orgs, clients, tokens, phones assign). A new group is a module with
`add_commands`, listed in `COMMAND_GROUPS`.

    farm phones                          table: serial, node, state, lock, app, screen
    farm tap SCOPE X Y                   farm long-tap SCOPE X Y [--ms 800]
    farm swipe SCOPE X1 Y1 X2 Y2 [--ms 300]
    farm text SCOPE TEXT                 farm key SCOPE KEY [--repeat N]
    farm launch SCOPE PACKAGE [--activity A]
    farm stop SCOPE PACKAGE
    farm screenshot SERIAL -o F.png [--width W]
    farm watch [--count N]               one line per live event
    farm run SEQUENCE SCOPE [--var k=v ...] [--wait]
                                         start a sequence (library name or a JSON file) on
                                         every phone of SCOPE; --wait follows each phone's steps
    farm registry check [DIR]            every problem, ambiguity and dead screen, one a line
    farm registry identify IMAGE [--app APP] [--registry DIR] [--explain]
                                         app/state | app/interrupt:name | unknown [(ambiguous: ..)]
    farm registry path APP FROM TO [--registry DIR]
                                         the route a go_to walks: screen --action--> screen
                                         per hop (exit 1: no route)
    farm registry apps                   the coordinator's registry: version, apps, screens
    farm vars preview TEXT --phone SERIAL [--account clipshare.account1] [--db PATH] [--seed N]
                                         TEXT with variables and spintax resolved (local DB)
    farm schedule add SEQUENCE SCOPE [--at ISO | --window START END --count N | --cron EXPR]
                      [--grace S] [--depends-on ID] [--id ID] [--allow-past]
                                         no time option: immediate
    farm schedule add --workflow NAME SCOPE [same options]
                                         each occurrence starts workflow NAME on SCOPE
    farm schedule list                   id, type, status, next fire, jobs by status
    farm schedule pause|resume|cancel ID
    farm runs [--limit N]                recent executions with their status
    farm audit [--entity sequence] [--since 2d] [--entity-id ID] [--limit N] [--json]
                                         who changed what and when (the audit trail)
    farm stats [--from 24h] [--until T] [--step 1h] [--by farm|client|sequence|node] [--json]
                                         the farm's history per step (one-minute rollups);
                                         --failures [--since 24h]: top failing sequences, screens
    farm login USER [--password-file F]  log in (password from F or stdin); the token is
                                         kept in ~/.config/phonefarm/token (0600)
    farm logout | farm whoami
    farm users [list] | farm users add NAME --role super|admin|client|viewer [--client C]..
                      [--organization O] [--password-file F]
    farm users disable|enable|passwd NAME
    farm orgs [list] | farm orgs add NAME
    farm clients [list] | farm clients add NAME [--organization O]
    farm tokens [list] [--all] | farm tokens add --name N [--expires 30d] [--out F]
    farm tokens revoke ID
    farm phones assign SERIAL --client C | --none
    farm groups [list]                   groups: client, kind, type, parent, member count
    farm groups add NAME KIND [--smart FILTER] [--parent P]
    farm groups member add|remove NAME MEMBER   (each: --client C, whose group book)
    farm retention [--data DIR] [--dry-run] [--config FILE]
                                         prune/compress the data folder (spec 7.6; local)
    farm backup [--to DIR] [--include-master-key] | farm backup list
                                         a backup the coordinator takes while the farm runs
    farm restore BACKUP [--data DIR] [--force]
                                         restore one into a stopped coordinator's data folder
    farm db status|migrate [--data DIR] [--db URL] [--db-password-file F]
                                         the farm database's schema version; migrate brings
                                         it up to date (local; a newer schema is refused)
    farm nodes                           nodes: name, state, phones attached
    farm nodes add NAME [--key-file PATH]
                                         issue node NAME's key: printed once, or written
                                         to PATH (mode 0600)
    farm nodes keys                      node keys: last 4 characters, status, last seen
    farm alerts [list] [--firing] | farm alerts ack ID | farm alerts silence RULE --for 2h
    farm alerts rules | farm alerts channels
                                         alerts, their rules, the channels' pending notices
    farm reports [list] [--client C] [--day D] | farm reports show ID [--html]
    farm reports make --client C [--day YYYY-MM-DD] [--send]
                                         the clients' daily reports; make one now
    farm nodes revoke NAME               the node is disconnected and refused from then on
    farm apks add FILE | farm apks [list] [--app APP] | farm apks remove ID
                                         the APK library (.apk, .xapk, .apkm; streamed)
    farm apps install APP --version V SCOPE [--allow-downgrade] [--wait] | farm apps uninstall
    farm apps list [--outdated] | farm apps pin APP VERSION --client C|--group G | unpin
                                         apps on the phones: installs, versions, pins
    farm links [list] [--account REF] | farm links add ACCOUNT URL [--title T]
    farm links remove ID | farm links clicks CODE --date D --count N [--source S]
                                         links in bio (public /l/CODE) and their clicks
    farm conversations [--account REF] | farm conversations show ID
                                         conversations the phones read
    farm content captions|hashtags|vars|media [list|set|add|remove] ...
                                         caption templates, hashtag sets, custom
                                         variables, the media library
    farm posts [--account REF] [--since 7d] | farm posts show ID
                                         the posts the phones recorded and their metrics
    farm accounts [--health at_risk,watch] each account's health, followers, last post
    farm analytics rollup --date D | farm analytics daily [--since D] [--until D]
                                         daily metrics per client and platform
    farm history KIND NAME [--client C] | farm diff KIND NAME FROM TO
    farm revert KIND NAME N --reason R   a definition's versions (KIND: sequence, workflow,
                                         schedule, screen, caption), their diff, going back
    farm export --git DIR | farm import --git DIR [--reason R]
                                         definitions to and from a Git repository
    farm templates [list|status] | farm templates add|remove [KIND] NAME --client C
    farm templates copy [KIND] NAME --to-client D | update [KIND] NAME --client D
                                         templates across an organization's clients

The endpoint is ``--url`` or $PHONEFARM_URL (default http://127.0.0.1:8470); the access
token comes from ``--token-file``, $PHONEFARM_TOKEN, ~/.config/phonefarm/token or the local
demo's DATA/admin.token (`credentials`), never from the command line; the registry DIR $PHONEFARM_REGISTRY (default the demo
registry, registry/apps). Exit status: 0 success; 1 some phone's action did not succeed (or
the scope matched no phone), `registry check` found problems or `registry path` no route; 2
bad usage, a request the endpoint rejected, an unreadable image or an invalid registry; 3
endpoint unreachable; 141 stdout closed by its reader (`farm runs | head`), quietly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from actors.control.cli import (ai, groups, nodes, phones, registry, retention, runs,
                                schedule, variables)
from actors.control.cli import audit, db, people
from actors.control.cli import backups
from actors.control.cli import alerts
from actors.control.cli import reports
from actors.control.cli import stats
from actors.control.cli import apks
from actors.control.cli import apps
from actors.control.cli import links
from actors.control.cli import posts, accounts, analytics
from actors.control.cli import content
from actors.control.cli import definitions
from actors.control.cli.credentials import find_token
from actors.control.cli.client import (DEFAULT_URL, EXIT_REJECTED, EXIT_STDOUT_CLOSED,
                                       EXIT_UNREACHABLE, FarmClient)
from protocol.errors import DeliveryError, FarmError

log = logging.getLogger(__name__)

# Each command group registers its subcommands, in the order `farm --help` lists them.
COMMAND_GROUPS = (phones, runs, ai, audit, schedule, groups, registry, variables, retention, db,
                  backups, nodes, people, alerts, reports)
COMMAND_GROUPS += (stats,)  # farm stats (issue 19.2)
COMMAND_GROUPS += (apks,)  # farm apks (issue 20.1)
COMMAND_GROUPS += (apps,)  # farm apps (issue 20.2/20.3)
COMMAND_GROUPS += (links,)  # farm links, farm conversations (issue 21.6)
COMMAND_GROUPS += (posts, accounts, analytics)  # farm posts/accounts/analytics (issue 21)
COMMAND_GROUPS += (content,)  # farm content (issue 21.4)
COMMAND_GROUPS += (definitions,)  # farm history/diff/revert (issue 23.1)


class RefuseSecret(argparse.Action):
    """``--token VALUE``: refused, never abbreviated into --token-file. Other users of the
    machine can read a command line; the value is not echoed back either."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error("--token is gone: a secret on the command line can be read by other "
                     "users; use --token-file FILE, PHONEFARM_TOKEN or `farm login`")


def build_parser() -> argparse.ArgumentParser:
    # Connection options work before or after the command (`farm --url U phones` and
    # `farm phones --url U`); the subcommand copies default to SUPPRESS so they don't clobber.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"control endpoint (env PHONEFARM_URL, default {DEFAULT_URL})")
    common.add_argument("--token-file", default=argparse.SUPPRESS,
                        help="file holding the access token (see `farm login`)")
    common.add_argument("--token", action=RefuseSecret, help=argparse.SUPPRESS)
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds to wait for an answer (default 60)")

    parser = argparse.ArgumentParser(prog="farm", description="Operate the phone farm.",
                                     epilog="SCOPE: phone:all | phone:SERIAL[,SERIAL..] | "
                                            "phone:all-SERIAL[,..] | node:NAME[,..]")
    parser.add_argument("--url", default=None,
                        help=f"control endpoint (env PHONEFARM_URL, default {DEFAULT_URL})")
    parser.add_argument("--token-file", default=None,
                        help="file holding the access token; else $PHONEFARM_TOKEN, else "
                             "~/.config/phonefarm/token (`farm login`), else the local demo's "
                             "DATA/admin.token (DATA: $PHONEFARM_DATA or ./farm-data)")
    parser.add_argument("--token", action=RefuseSecret, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for an answer (default 60)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("PHONEFARM_LOG_LEVEL", "WARNING").upper(),
                        stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    url = args.url or os.environ.get("PHONEFARM_URL") or DEFAULT_URL
    try:
        token = find_token(args.token_file)
    except OSError as exc:
        print(f"farm: cannot read the token file: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    client = FarmClient(url, token, timeout=args.timeout)
    try:
        code = args.func(client, args)
        sys.stdout.flush()  # a reader that went away shows here, not in the exit's flush
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except DeliveryError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except FarmError as exc:  # the endpoint answered with an error
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except OSError as exc:  # e.g. the screenshot file cannot be written
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        return 130


def _stdout_closed() -> int:
    """`farm runs | head`: the reader has what it wanted. Point stdout at /dev/null, so the
    interpreter's own flush at exit does not fail again, and exit as a process ended by
    SIGPIPE would (128 + 13), quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_STDOUT_CLOSED

