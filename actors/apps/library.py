"""The farm's APK library: app versions stored once by hash, described by their manifests.

`ApkLibrary` owns the folder ``DATA/apks/`` (each file once, as ``<sha256>.apk`` or
``<sha256>.obb``; uploads arrive in ``incoming/`` and are gone there when a call returns)
and the rows of ``apk_files`` and ``app_registry`` (schema v20, farm-wide: no client owns a
row). `receive` streams an upload to a temp file, hashing it and refusing it past a size
limit; `add_file` reads it (a plain APK, or an .xapk/.apkm/.apks zip of APKs and OBBs:
actors.apps.apk_info), checks it whole against the library, and only then moves the files
into place and writes the rows in one transaction; `files_for` is what an install sends
(actors.coordinator.apps); `remove` refuses a file a pin names (`pinned_by`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, AsyncIterator, Callable

import orjson

from actors.apps.apk_info import ApkError, ApkInfo, BundleEntry, MANIFEST, bundle_entries, \
    read_apk
from actors.store.execution_records import utc_text
from protocol.errors import FarmError, ValidationError

log = logging.getLogger(__name__)

DEFAULT_MAX_MB = 1024
_CHUNK = 1024 * 1024
INCOMING = "incoming"


def parse_max_mb(value: str) -> int:
    """--apk-max-mb: a whole number of MiB, at least 1."""
    try:
        mb = int(value)
    except ValueError:
        raise ValueError(f"{value!r}: expected a whole number of MiB") from None
    if mb < 1:
        raise ValueError(f"{value!r}: expected at least 1 (MiB)")
    return mb


class UploadTooLarge(FarmError):
    """An upload went past the library's size limit (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"upload is larger than the limit of {limit} bytes (--apk-max-mb)")


class UploadTruncated(FarmError):
    """The body ended before its declared length (HTTP 400); nothing was kept."""


class ApkInUse(FarmError):
    """A file some pin names may not be removed (HTTP 409)."""


@dataclass(frozen=True)
class Upload:
    """A received upload: a temp file under ``incoming/`` with its hash and size."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class ApkFile:
    """One stored file of an app version, as an install names it."""

    apk_id: int
    app: str
    package: str
    version_name: str
    version_code: int
    kind: str  # "apk" | "obb"
    name: str  # its name in the upload: base.apk, config.arm64_v8a.apk, Android/obb/...
    split: str | None
    abis: tuple[str, ...]
    densities: tuple[str, ...]
    min_sdk: int | None
    target_sdk: int | None
    sha256: str
    size: int
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"apk_id": self.apk_id, "app": self.app, "package": self.package,
                "version_name": self.version_name, "version_code": self.version_code,
                "kind": self.kind, "name": self.name, "split": self.split,
                "abis": list(self.abis), "densities": list(self.densities),
                "min_sdk": self.min_sdk, "target_sdk": self.target_sdk,
                "sha256": self.sha256, "size": self.size}


@dataclass
class _Part:
    """One file of an upload, checked, before it is stored."""

    name: str
    kind: str
    sha256: str
    size: int
    info: ApkInfo | None
    source: Path | None = None  # the upload (a plain APK's file, or the bundle)
    entry: str | None = None  # a bundle's part: its entry

    @property
    def part(self) -> str:
        if self.kind == "obb":
            return "obb:" + self.name.rsplit("/", 1)[-1]
        return (self.info.split if self.info else None) or ""


@dataclass
class AddResult:
    """What an upload added: the app, its version, every file row (new or already there)."""

    app: str
    package: str
    version_name: str
    version_code: int
    files: list[ApkFile] = field(default_factory=list)
    added: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"app": self.app, "package": self.package, "version_name": self.version_name,
                "version_code": self.version_code, "added": self.added,
                "files": [f.to_json() for f in self.files]}


async def pinned_by(db: Any, apk_id: int) -> list[dict[str, Any]]:
    """The pins (schema v21, actors.coordinator.apps_store) naming the version of file
    ``apk_id``: a pinned version's files stay. Before v21 there are no pins: []."""
    try:
        rows = await db._all(
            "SELECT p.pin_id, p.target, p.version FROM app_pins p"
            " JOIN app_registry r ON r.package_name = p.package"
            " JOIN apk_files f ON f.app_id = r.app_id"
            " WHERE f.apk_id = ? AND (p.version_code = f.version_code OR p.version = f.version)"
            " ORDER BY p.pin_id", (apk_id,))
    except Exception as exc:  # no app_pins table: a database before schema v21
        if "app_pins" not in str(exc):
            raise
        return []
    return [dict(r) for r in rows]


class ApkLibrary:
    """Owns ``root`` (DATA/apks) and the rows of apk_files and app_registry."""

    def __init__(self, root: str | os.PathLike, db: Any, *,
                 max_bytes: int = DEFAULT_MAX_MB * 1024 * 1024) -> None:
        self.root = Path(root)
        self.db = db
        self.max_bytes = max_bytes
        self.incoming = self.root / INCOMING
        # One upload checks and stores at a time: two uploads of one version cannot both
        # find it missing and both write.
        self._adding = asyncio.Lock()

    def _ensure_dirs(self) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True, mode=0o700)

    def clear_incoming(self) -> int:
        """Remove uploads a crash left behind (at start: nothing is receiving)."""
        if not self.incoming.is_dir():
            return 0
        count = 0
        for path in self.incoming.iterdir():
            path.unlink(missing_ok=True)
            count += 1
        return count

    def file_path(self, sha256: str, kind: str = "apk") -> Path:
        return self.root / f"{sha256}.{'obb' if kind == 'obb' else 'apk'}"

    # --- receiving -----------------------------------------------------------------------
    async def receive(self, chunks: AsyncIterator[bytes], *,
                      expected: int | None = None) -> Upload:
        """Write ``chunks`` to a temp file under incoming/, hashing as they come; refuse
        (and delete) past ``max_bytes`` or when fewer than ``expected`` bytes came."""
        if expected is not None and expected > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)
        self._ensure_dirs()
        path = self.incoming / f"{secrets.token_hex(8)}.part"
        digest, size = hashlib.sha256(), 0
        try:
            with path.open("wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadTooLarge(self.max_bytes)
                    # Off the loop: an upload of a GB must not stall every other request.
                    await asyncio.to_thread(_hash_and_write, digest, out, chunk)
            if expected is not None and size != expected:
                raise UploadTruncated(f"upload ended after {size} of {expected} bytes "
                                      "(Content-Length); nothing was kept")
            if size == 0:
                raise ValidationError("body", "empty upload: send the .apk, .xapk or .apkm "
                                      "file as the request body")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Upload(path, digest.hexdigest(), size)

    async def receive_file(self, source: str | os.PathLike) -> Upload:
        """A local file as an upload (copied in chunks into incoming/)."""
        async def chunks() -> AsyncIterator[bytes]:
            with open(source, "rb") as fh:
                while chunk := await asyncio.to_thread(fh.read, _CHUNK):
                    yield chunk
        return await self.receive(chunks())

    # --- adding ---------------------------------------------------------------------------
    async def add_upload(self, upload: Upload, *, label: str = "upload",
                         app_name: str | Callable[[str], str | None] | None = None,
                         actor: str | None = None) -> AddResult:
        """Check ``upload`` whole, then store its files and rows; the temp file is gone
        afterwards either way. ``app_name``: the screen registry's app for the package (or
        a function of the package giving it); None: the app is named by its package."""
        try:
            async with self._adding:
                parts = await asyncio.to_thread(self._read_parts, upload, label)
                return await self._store(parts, label, app_name, actor)
        finally:
            upload.path.unlink(missing_ok=True)

    def _read_parts(self, upload: Upload, label: str) -> list[_Part]:
        try:
            with zipfile.ZipFile(upload.path) as zf:
                is_apk = MANIFEST in zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ApkError(label, f"not a zip file, so neither an APK nor a bundle ({exc})") \
                from exc
        if is_apk:
            info = read_apk(upload.path, where=label)
            return [_Part("base.apk" if info.split is None else f"{info.split}.apk", "apk",
                          info.sha256, info.size, info, source=upload.path)]
        entries: list[BundleEntry] = bundle_entries(upload.path, where=label,
                                                      max_bytes=self.max_bytes)
        return [_Part(e.name, e.kind, e.sha256, e.size, e.info, source=upload.path,
                      entry=e.name) for e in entries]

    async def _store(self, parts: list[_Part], label: str,
                     app_name: str | Callable[[str], str | None] | None,
                     actor: str | None) -> AddResult:
        apks = [p for p in parts if p.kind == "apk" and p.info is not None]
        lead = next((p.info for p in apks if p.info.split is None), apks[0].info)
        assert lead is not None
        package, code = lead.package, lead.version_code
        if callable(app_name):
            app_name = app_name(package)
        version_name = lead.version_name
        existing = await self._version_rows(package, code)
        if lead.split is not None:  # a split alone joins the base already stored
            base = existing.get("")
            if base is None:
                raise ApkError(label, f"split {lead.split!r} of {package} versionCode {code}: "
                               "the library has no base APK of that version; upload the "
                               "base first, or the whole bundle")
            version_name = base["version"]
        for part in parts:
            row = existing.get(part.part)
            if row is not None and row["sha256"] != part.sha256:
                raise ApkError(f"{label}: {part.name}", f"{package} versionCode {code} has a "
                               f"different {part.part or 'base'} already (apk_id "
                               f"{row['apk_id']}); remove it first")
        placed = await asyncio.to_thread(self._place, parts, label)
        try:
            added = await self.db._atomic(
                lambda conn: self._write_rows(conn, parts, existing, package, code,
                                              version_name, app_name, actor))
        except BaseException:
            for path in placed:
                path.unlink(missing_ok=True)
            raise
        rows = await self._version_rows(package, code)
        result = AddResult(app="", package=package, version_name=version_name,
                           version_code=code, added=added)
        result.files = [self._file(r) for r in rows.values()
                        if r["part"] in {p.part for p in parts}]
        result.app = result.files[0].app if result.files else package
        if added:
            await self.db.audit("apk", f"{package}@{code}", "create", None,
                                {"package": package, "version_code": code,
                                 "version_name": version_name, "added": added,
                                 "files": [f.name for f in result.files]}, actor=actor)
        return result

    def _place(self, parts: list[_Part], label: str) -> list[Path]:
        """Put each part at DATA/apks/<sha256>.<kind> (a file there already is the same
        bytes); the paths newly made, for undoing."""
        placed: list[Path] = []
        try:
            for part in parts:
                target = self.file_path(part.sha256, part.kind)
                if target.exists():
                    continue
                assert part.source is not None
                if part.entry is None:  # a plain APK: the upload itself, renamed
                    os.chmod(part.source, 0o600)
                    os.replace(part.source, target)
                else:
                    tmp = self.incoming / f"{secrets.token_hex(8)}.part"
                    try:
                        self._extract(part, tmp, label)
                        os.replace(tmp, target)
                    finally:
                        tmp.unlink(missing_ok=True)
                placed.append(target)
        except BaseException:
            for path in placed:
                path.unlink(missing_ok=True)
            raise
        return placed

    @staticmethod
    def _extract(part: _Part, tmp: Path, label: str) -> None:
        """Copy a bundle's entry out, checking it is the bytes that were read before."""
        assert part.source is not None and part.entry is not None
        digest = hashlib.sha256()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with zipfile.ZipFile(part.source) as zf, zf.open(part.entry) as src, \
                os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != part.sha256:
            raise ApkError(f"{label}: entry {part.entry!r}", "changed while it was read")

    def _write_rows(self, conn: Any, parts: list[_Part], existing: dict[str, dict],
                    package: str, code: int, version_name: str, app_name: str | None,
                    actor: str | None) -> int:
        """The app's registry row (linked to the screen registry's app when there is one)
        and a row per new part; runs on the writer's thread, all or none."""
        now = utc_text()
        row = conn.execute("SELECT app_id, app_name FROM app_registry WHERE package_name = ?",
                           (package,)).fetchone()
        if row is None:
            app_id = conn.execute(
                "INSERT INTO app_registry (app_name, package_name, default_version,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?) RETURNING app_id",
                (app_name or package, package, version_name, now, now)).fetchone()[0]
        else:
            app_id = row[0]
            if app_name and row[1] != app_name:
                conn.execute("UPDATE app_registry SET app_name = ?, updated_at = ?"
                             " WHERE app_id = ?", (app_name, now, app_id))
        added = 0
        for part in parts:
            if part.part in existing:
                continue
            info = part.info
            conn.execute(
                "INSERT INTO apk_files (app_id, version, file_path, file_size, is_split,"
                " split_info, upload_date, status, sha256, kind, entry_name, part,"
                " version_code, min_sdk, target_sdk, abis, densities, uploaded_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (app_id, version_name, self.file_path(part.sha256, part.kind).name, part.size,
                 bool(info and info.split), info.split if info else None, now, part.sha256,
                 part.kind, part.name, part.part, code,
                 info.min_sdk if info else None, info.target_sdk if info else None,
                 orjson.dumps(list(info.abis) if info else []).decode(),
                 orjson.dumps(list(info.densities) if info else []).decode(), actor))
            added += 1
        return added

    # --- reading --------------------------------------------------------------------------
    _SELECT = ("SELECT f.apk_id, f.version, f.version_code, f.kind, f.entry_name, f.part,"
               " f.split_info, f.abis, f.densities, f.min_sdk, f.target_sdk, f.sha256,"
               " f.file_size, f.upload_date, f.uploaded_by, r.app_name, r.package_name"
               " FROM apk_files f JOIN app_registry r ON r.app_id = f.app_id"
               " WHERE f.sha256 IS NOT NULL")

    async def _version_rows(self, package: str, code: int) -> dict[str, dict]:
        rows = await self.db._all(self._SELECT + " AND r.package_name = ? AND f.version_code"
                                  " = ?", (package, code))
        return {r["part"]: dict(r) for r in rows}

    def _file(self, row: dict) -> ApkFile:
        return ApkFile(apk_id=row["apk_id"], app=row["app_name"], package=row["package_name"],
                       version_name=row["version"], version_code=int(row["version_code"]),
                       kind=row["kind"], name=row["entry_name"], split=row["split_info"],
                       abis=tuple(orjson.loads(row["abis"] or "[]")),
                       densities=tuple(orjson.loads(row["densities"] or "[]")),
                       min_sdk=row["min_sdk"], target_sdk=row["target_sdk"],
                       sha256=row["sha256"], size=int(row["file_size"]),
                       path=self.file_path(row["sha256"], row["kind"]))

    async def list(self, app: str | None = None) -> list[dict[str, Any]]:
        """Every stored file (of ``app``: its registry name or package), newest version
        first, with its upload time."""
        sql, args = self._SELECT, []
        if app is not None:
            sql += " AND (r.app_name = ? OR r.package_name = ?)"
            args = [app, app]
        rows = await self.db._all(sql + " ORDER BY r.app_name, f.version_code DESC, f.part",
                                  args)
        out = []
        for row in rows:
            item = self._file(dict(row)).to_json()
            item["uploaded_at"] = row["upload_date"]
            item["uploaded_by"] = row["uploaded_by"]
            out.append(item)
        return out

    async def files_for(self, app: str, version: str | int, *,
                        obb: bool = False) -> list[ApkFile]:
        """The APKs of ``app`` (registry name or package) at ``version`` (a version name,
        or a version code as digits), base first; [] if the library has none. OBB files
        only with ``obb`` (they are not installed by ``pm``: a phone gets them pushed)."""
        text = str(version)
        sql = self._SELECT + " AND (r.app_name = ? OR r.package_name = ?)"
        if not obb:
            sql += " AND f.kind = 'apk'"
        sql += " AND (f.version = ?"
        args: list[Any] = [app, app, text]
        if text.isdigit():
            sql += " OR f.version_code = ?"
            args.append(int(text))
        rows = await self.db._all(sql + ") ORDER BY f.version_code DESC, f.part", args)
        files = [self._file(dict(r)) for r in rows]
        if not files:
            return []
        newest = files[0].version_code  # a name given to two codes: the newest build
        return [f for f in files if f.version_code == newest]

    async def get(self, apk_id: int) -> ApkFile | None:
        row = await self.db._one(self._SELECT + " AND f.apk_id = ?", (apk_id,))
        return None if row is None else self._file(dict(row))

    # --- removing -------------------------------------------------------------------------
    async def remove(self, apk_id: int, *, actor: str | None = None) -> ApkFile:
        """Delete one file's row (and the file, when no other row names its hash); refused
        while a pin names its version. LookupError when there is no such file."""
        async with self._adding:
            found = await self.get(apk_id)
            if found is None:
                raise LookupError(f"no such APK file: {apk_id}")
            pins = await pinned_by(self.db, apk_id)
            if pins:
                names = ", ".join(f"{p['target']} (pin {p['pin_id']})" for p in pins)
                raise ApkInUse(f"apk {apk_id} ({found.package} {found.version_name}) is "
                               f"pinned by {names}; unpin it first")
            others = await self.db._one("SELECT COUNT(*) FROM apk_files WHERE sha256 = ?"
                                        " AND apk_id <> ?", (found.sha256, apk_id))
            await self.db._write("DELETE FROM apk_files WHERE apk_id = ?", (apk_id,))
            if not others[0]:
                found.path.unlink(missing_ok=True)
            await self.db.audit("apk", apk_id, "delete", found.to_json(), None, actor=actor)
            return found


def _hash_and_write(digest: "hashlib._Hash", out: IO[bytes], chunk: bytes) -> None:
    digest.update(chunk)
    out.write(chunk)
