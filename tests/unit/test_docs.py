"""The project's documentation (README.md, docs/*.md) names only files that exist in the tree.

Every backticked path-looking token (one word with a slash, ending in a known extension or a
slash: ``actors/coordinator/hub.py``, ``actors/control/static/``) is a path relative to the
repository root and must exist; every relative markdown link target (``[x](docs/a.md)``)
must exist relative to the linking file; nothing may point outside the repository (a
newcomer who clones the project has nothing beside it, e.g. no ``../shared``). Not checked:
fenced code blocks (commands and their example files), absolute paths and URL paths
(``/etc/...``, ``/api/...``), URLs, placeholders (``<app>``, ``{serial}``, ``*``) and the data
folder a farm creates at run time (``DATA/...``, ``farm-data/...``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_DOCS = ("README.md", "docs/architecture.md", "docs/operations.md")

EXTENSIONS = (".py", ".md", ".json", ".sql", ".js", ".css", ".html", ".toml", ".txt", ".png",
              ".sh", ".cfg", ".ini", ".yml", ".yaml", ".rules", ".sqlite3")
# First segment of a path inside a farm's data folder (--data, default ./farm-data): written
# at run time, never part of the tree.
RUNTIME_ROOTS = frozenset({"DATA", "farm-data"})
PLACEHOLDER = re.compile(r"[<>{}*$|]")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
OUTSIDE = "../shared"


def docs(root: Path = ROOT) -> list[Path]:
    """README.md and every docs/*.md under ``root``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) of every line outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def path_token(code: str) -> str | None:
    """The repository-relative path an inline code span names, or None if it names none."""
    token = code.strip()
    if not token or any(c.isspace() for c in token) or "://" in token:
        return None
    if "/" not in token or token.startswith("/") or not token.endswith(("/", *EXTENSIONS)):
        return None
    token = token.removeprefix("./")
    if PLACEHOLDER.search(token) or token.split("/", 1)[0] in RUNTIME_ROOTS:
        return None
    return token


def link_target(target: str) -> str | None:
    """The relative file a markdown link points to, or None for URLs and anchors."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None
    return target.split("#", 1)[0] or None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def problems(doc: Path, root: Path = ROOT) -> list[str]:
    """``doc:line: ...`` for every path or link of ``doc`` that is missing or outside ``root``."""
    shown = doc.relative_to(root) if _inside(doc, root) else doc
    found: list[str] = []
    for number, line in prose_lines(doc.read_text(encoding="utf-8")):
        for match in INLINE_CODE.finditer(line):
            rel = path_token(match.group(1))
            if rel is None:
                continue
            target = root / rel
            if not _inside(target, root):
                found.append(f"{shown}:{number}: `{rel}` points outside the repository")
            elif not target.exists() or (rel.endswith("/") and not target.is_dir()):
                found.append(f"{shown}:{number}: `{rel}` does not exist in the tree")
        for match in LINK.finditer(line):
            rel = link_target(match.group(1))
            if rel is None:
                continue
            target = doc.parent / rel
            if not _inside(target, root):
                found.append(f"{shown}:{number}: link ({rel}) points outside the repository")
            elif not target.exists():
                found.append(f"{shown}:{number}: link ({rel}) does not exist")
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        if OUTSIDE in line:
            found.append(f"{shown}:{number}: mentions {OUTSIDE}, which is not in the repository")
    return found


def test_the_documents_exist() -> None:
    missing = [name for name in REQUIRED_DOCS if not (ROOT / name).is_file()]
    assert not missing, f"missing documents: {', '.join(missing)}"


def test_every_path_and_link_in_the_docs_exists_inside_the_repository() -> None:
    found = [line for doc in docs() for line in problems(doc)]
    assert not found, "\n".join(found)


def test_readme_starts_with_the_two_setup_commands_then_points_to_the_docs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    assert "apt-get install" in blocks[0] and "farm-coordinator --demo" in blocks[0]
    assert blocks[1].strip() == ".venv/bin/python -m pytest -q -n 3 --dist loadfile"
    after_setup = text[text.index(blocks[1]) + len(blocks[1]):]
    first_section = after_setup[:after_setup.index("## Using the farm")]
    assert "(docs/architecture.md)" in first_section and "(docs/operations.md)" in first_section


def test_the_check_names_the_doc_line_and_path(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "real.py").write_text("")
    doc = tmp_path / "docs" / "a.md"
    doc.write_text("\n".join([
        "# A",
        "`pkg/real.py` and `pkg/` exist; `pkg/gone.py` does not.",
        "```sh",
        "cat pkg/in_a_fence.py `pkg/fenced.py`",
        "```",
        "Runtime `DATA/secret.key`, `farm-data/farm.sqlite3`, pattern `pkg/<name>.json`,",
        "absolute `/etc/phonefarm/secret`, route `/api/phones`, `GET /api/x.json`.",
        "Links: [ok](../pkg/real.py), [missing](../pkg/none.md), [web](https://x.org/a.md),",
        "[anchor](#a), [out](../../elsewhere.md), see ../shared/DESIGN.md, `../up.py`.",
    ]))
    assert problems(doc, tmp_path) == [
        "docs/a.md:2: `pkg/gone.py` does not exist in the tree",
        "docs/a.md:8: link (../pkg/none.md) does not exist",
        "docs/a.md:9: `../up.py` points outside the repository",
        "docs/a.md:9: link (../../elsewhere.md) points outside the repository",
        "docs/a.md:9: mentions ../shared, which is not in the repository",
    ]
