"""Definitions as files in a Git repository (issue 23.2): `export_to_git` writes each current
definition as pretty JSON and commits each one that changed since the last export on its
own, with its newest version's author, time and reason; `read_tree` reads such a checkout
back, every problem named by file and JSON pointer.

Layout (the shipped library's and registry's, plus a folder per client for client-owned
kinds; ``_shared`` for the farm's shared ones):

    sequences/<app>/<name>.json              a sequence file, as sequences/library/ has it
    registry/<app>/<screen>.json             {"kind", "screen"}: one registry screen
    registry/<app>/<file>.png                the crops and screenshots screens name (the
                                             paths in the screen JSON, as registry/apps/)
    workflows/<client>/<name>.json           a workflow: description, is_template, sequences
    captions/<client>/<name>.json            {"template"}
    schedules/<client>/<id>.json             a schedule as it was asked (exported only)

We drive the ``git`` program (the one the machine has; GitPython would run the same program
underneath and add a dependency for the four commands used: init, add, diff --cached,
commit), with the author, committer and dates given per commit so no Git configuration of
the machine is needed or changed.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from protocol.errors import FarmError, ValidationError

SHARED = "_shared"
COMMITTER = ("phonefarm", "phonefarm@localhost")
# Kinds kept per client, and their folders.
CLIENT_FOLDERS = {"workflow": "workflows", "caption": "captions", "schedule": "schedules"}


class GitError(FarmError):
    """A git command failed (its stderr says why)."""


def _client_dir(client: str | None) -> str:
    return SHARED if client is None else urllib.parse.quote(client, safe="")


def _pretty(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()


def definition_files(definition: dict) -> dict[str, bytes]:
    """The files (repository-relative path -> bytes) one definition is written as."""
    kind, name, content = definition["kind"], definition["name"], definition["content"]
    if kind == "sequence":
        return {f"sequences/{name}.json": _pretty(content)}
    if kind == "screen":
        app, _, screen = name.partition("/")
        files = {f"registry/{app}/{screen}.json": _pretty(
            {"kind": content["kind"], "screen": content["screen"]})}
        for rel, data in (content.get("files") or {}).items():
            files[f"registry/{rel}"] = base64.b64decode(data)
        return files
    folder = CLIENT_FOLDERS[kind]
    return {f"{folder}/{_client_dir(definition.get('client'))}/{name}.json": _pretty(content)}


def _author(author: str | None) -> tuple[str, str]:
    """A version's author (``user:<id>:<name>``, or none: found on disk) as Git's."""
    if not author:
        return COMMITTER
    name = author.rsplit(":", 1)[-1] if author.startswith("user:") else author
    local = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "user"
    return name, f"{local}@phonefarm.invalid"


def _git(folder: Path, *args: str, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    done = subprocess.run(["git", "-C", str(folder), "-c", "commit.gpgsign=false",
                           "-c", "core.autocrlf=false", *args], capture_output=True,
                          text=True, env=full_env)
    if check and done.returncode != 0:
        raise GitError(f"git {' '.join(args[:2])} in {folder}: "
                       f"{(done.stderr or done.stdout).strip()[:500]}")
    return done


def export_to_git(folder: str | os.PathLike, definitions: list[dict]) -> list[dict]:
    """Write ``definitions`` (each: kind, name, client, version, author, reason, created_at,
    content) into the repository at ``folder`` (made with ``git init`` when it is none) and
    commit every definition whose files changed, one commit each, oldest version first.
    Returns the commits made: ``[{"kind", "name", "client", "version", "commit"}]``."""
    root = Path(folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    top = _git(root, "rev-parse", "--show-toplevel", check=False)
    # The folder must be a repository's top: one inside another repository (an export
    # folder in a checkout) gets its own, never commits into the enclosing one.
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
        _git(root, "init", "-q")
    made = []
    for definition in sorted(definitions, key=lambda d: (d.get("created_at") or "",
                                                         d["kind"], d["name"])):
        files = definition_files(definition)
        for rel, data in files.items():
            path = root / rel
            if path.is_file() and path.read_bytes() == data:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        _git(root, "add", "--", *files)
        if _git(root, "diff", "--cached", "--quiet", check=False).returncode == 0:
            continue  # unchanged since the last export
        name, email = _author(definition.get("author"))
        when = definition.get("created_at") or ""
        owner = f" ({definition['client']})" if definition.get("client") else ""
        message = (f"{definition['kind']} {definition['name']}{owner}: version "
                   f"{definition['version']}\n\n{definition.get('reason') or 'no reason given'}"
                   f"\n\ncontent sha256 {definition.get('content_hash', '')}\n")
        env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
               "GIT_COMMITTER_NAME": COMMITTER[0], "GIT_COMMITTER_EMAIL": COMMITTER[1]}
        if when:  # the version's time (UTC text), in Git's own form
            stamp = datetime.fromisoformat(when[:19]).replace(tzinfo=timezone.utc)
            env["GIT_AUTHOR_DATE"] = f"@{int(stamp.timestamp())} +0000"
        _git(root, "commit", "-q", "-m", message, env=env)
        head = _git(root, "rev-parse", "HEAD").stdout.strip()
        made.append({"kind": definition["kind"], "name": definition["name"],
                     "client": definition.get("client"), "version": definition["version"],
                     "commit": head})
    return made


def _load_json(path: Path, rel: str, problems: list[ValidationError]) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(ValidationError(rel, f"unreadable: {exc}"))
    except json.JSONDecodeError as exc:
        problems.append(ValidationError(rel, f"not JSON: line {exc.lineno} column "
                                             f"{exc.colno}: {exc.msg}"))
    return None


def _objects(root: Path, pattern: str,
             problems: list[ValidationError]) -> Iterator[tuple[Path, str, dict]]:
    """(path, repository-relative path, object) of each file under ``root`` matching
    ``pattern`` that holds a JSON object; any other file is a problem."""
    for path in sorted(root.glob(pattern)):
        rel = path.relative_to(root).as_posix()
        value = _load_json(path, rel, problems)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(ValidationError(f"{rel}#", "must be a JSON object"))
            continue
        yield path, rel, value


def read_tree(folder: str | os.PathLike) -> tuple[list[dict], list[ValidationError]]:
    """The definitions of an exported checkout: ``[{"kind", "name", "client", "content",
    "path"}]`` and every problem found (``where``: ``path#/json/pointer``). Schedules are
    not read (a schedule is added, not imported)."""
    root = Path(folder)
    if not root.is_dir():
        raise ValidationError(str(root), "no such folder")
    out: list[dict] = []
    problems: list[ValidationError] = []
    for path, rel, content in _objects(root, "sequences/*/*.json", problems):
        out.append({"kind": "sequence", "name": f"{path.parent.name}/{path.stem}",
                    "client": None, "content": content, "path": rel})
    for path, rel, data in _objects(root, "registry/*/*.json", problems):
        screen = data.get("screen")
        if not isinstance(screen, dict):
            problems.append(ValidationError(f"{rel}#/screen", "required: the screen's JSON"))
            continue
        files: dict[str, str] = {}
        names = [(f"/screen/validation_regions/{i}/reference", r.get("reference"))
                 for i, r in enumerate(screen.get("validation_regions") or [])
                 if isinstance(r, dict)]
        names.append(("/screen/reference_screenshot", screen.get("reference_screenshot")))
        for pointer, ref in names:
            if not ref:
                continue
            file = root / "registry" / ref
            if not isinstance(ref, str) or ".." in Path(ref).parts or not file.is_file():
                problems.append(ValidationError(f"{rel}#{pointer}",
                                                f"{ref!r}: no such file under registry/"))
                continue
            files[ref] = base64.b64encode(file.read_bytes()).decode()
        out.append({"kind": "screen", "name": f"{path.parent.name}/{path.stem}",
                    "client": None, "path": rel,
                    "content": {"app": path.parent.name, "kind": data.get("kind"),
                                "screen": screen, "files": files}})
    for kind in ("workflow", "caption"):
        for path, rel, content in _objects(root, f"{CLIENT_FOLDERS[kind]}/*/*.json", problems):
            folder_name = path.parent.name
            out.append({"kind": kind, "name": path.stem, "path": rel, "content": content,
                        "client": None if folder_name == SHARED
                        else urllib.parse.unquote(folder_name)})
    return out, problems
