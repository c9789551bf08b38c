"""What an APK file is, read from its binary AndroidManifest.xml, never from its file name.

Owns `ApkInfo` (package, version, SDK levels, ABIs, densities, split name, hash and size of
one APK), `read_apk` (one APK: a path or its bytes), `read_bundle` / `bundle_entries` (an
.xapk, .apkm or any zip of APKs with optional OBB files) and `ApkError`, the one error for a
file that is not what it claims (it names where: the file, or the bundle and its entry).

The manifest parser is pyaxmlparser (its `AXMLPrinter`, androguard's binary-XML decoder
packaged alone). Chosen over androguard itself because androguard 4 installs some 160 MB of
dependencies a coordinator has no use for (IPython, SQLAlchemy, alembic, networkx, pydot,
loguru, which logs DEBUG lines to stderr by default), while pyaxmlparser needs lxml, click
and asn1crypto; we use only the manifest decoder, behind this one module, so changing
parsers (androguard's `androguard.core.axml.AXMLPrinter` has the same interface) is a change
here alone. The zip itself is read with the standard library, with limits: a manifest larger
than `MAX_MANIFEST` uncompressed is refused before it is inflated.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from protocol.errors import FarmError

# pyaxmlparser logs its own complaint about a broken manifest at ERROR; ApkError says it
# with the file's name instead, so its logger only speaks when something is really wrong.
logging.getLogger("pyaxmlparser").setLevel(logging.CRITICAL)

ANDROID_NS = "{http://schemas.android.com/apk/res/android}"
MANIFEST = "AndroidManifest.xml"
# Real manifests are tens of KB; a bigger one is a zip bomb or not a manifest.
MAX_MANIFEST = 4 * 1024 * 1024
KNOWN_ABIS = ("armeabi", "armeabi-v7a", "arm64-v8a", "x86", "x86_64", "mips", "mips64",
              "riscv64")
DENSITIES = ("ldpi", "mdpi", "tvdpi", "hdpi", "xhdpi", "xxhdpi", "xxxhdpi", "nodpi",
             "anydpi")
# A split named config.<abi> spells the ABI with underscores (config.arm64_v8a).
_SPLIT_ABIS = {abi.replace("-", "_"): abi for abi in KNOWN_ABIS}
_PACKAGE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")
_CHUNK = 1024 * 1024


class ApkError(FarmError):
    """An APK or bundle that cannot be used; `where` names the file (and entry), `why` says."""

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        self.why = why
        super().__init__(f"{where}: {why}")


@dataclass(frozen=True)
class ApkInfo:
    """One APK's identity as its binary manifest states it, plus its content hash and size."""

    package: str
    version_code: int
    version_name: str  # "" when the manifest has none (config splits often have none)
    min_sdk: int
    target_sdk: int
    abis: tuple[str, ...]
    densities: tuple[str, ...]
    split: str | None  # the manifest's split name; None for a base APK
    sha256: str
    size: int

    def to_json(self) -> dict:
        return {"package": self.package, "version_code": self.version_code,
                "version_name": self.version_name, "min_sdk": self.min_sdk,
                "target_sdk": self.target_sdk, "abis": list(self.abis),
                "densities": list(self.densities), "split": self.split,
                "sha256": self.sha256, "size": self.size}


def read_apk(source: str | os.PathLike | bytes, where: str | None = None) -> ApkInfo:
    """Read one APK (a path or its bytes); raises ApkError naming `where` (default: the path)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = where or "APK"
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        return _read_zip(io.BytesIO(data), label, digest, size)
    path = Path(source)
    label = where or str(path)
    try:
        digest, size = _hash_file(path)
        with path.open("rb") as fh:
            return _read_zip(fh, label, digest, size)
    except OSError as exc:
        raise ApkError(label, f"cannot read: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class BundleEntry:
    """One file of a bundle: an APK (with its info) or an OBB expansion file."""

    name: str
    kind: str  # "apk" | "obb"
    size: int
    sha256: str
    info: ApkInfo | None


def check_entry_name(bundle: str, name: str) -> None:
    """Refuse an entry that would land outside the folder it is unpacked into."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if (name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in pure.parts
            or "\x00" in name):
        raise ApkError(f"{bundle}: entry {name!r}", "path traversal: the entry's name leaves "
                       "the bundle's folder")


def bundle_entries(path: str | os.PathLike, where: str | None = None, *,
                   max_bytes: int | None = None) -> list[BundleEntry]:
    """Every APK and OBB of a zip bundle (.xapk, .apkm, .apks), checked before any is used.

    Every entry name is checked first (one path-traversal entry refuses the whole bundle),
    and with ``max_bytes`` the entries' unpacked sizes together (a zip bomb under the upload
    limit would otherwise fill the disk: zipfile stops an entry at its declared size);
    then each APK's manifest is read. The APKs must name one package and one version code,
    with exactly one base APK (no split name).
    """
    path = Path(path)
    label = where or str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ApkError(label, f"not a zip file ({exc})") from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        for item in infos:
            check_entry_name(label, item.filename)
        unpacked = sum(i.file_size for i in infos)
        if max_bytes is not None and unpacked > max_bytes:
            raise ApkError(label, f"bundle unpacks to {unpacked} bytes, more than the "
                           f"{max_bytes} allowed")
        entries: list[BundleEntry] = []
        for item in infos:
            lower = item.filename.lower()
            if lower.endswith(".apk"):
                entries.append(_bundle_apk(zf, item, label))
            elif lower.endswith(".obb"):
                digest, size = _hash_stream(_open_entry(zf, item, label))
                entries.append(BundleEntry(item.filename, "obb", size, digest, None))
    apks = [e for e in entries if e.kind == "apk"]
    if not apks:
        raise ApkError(label, "bundle holds no .apk entry")
    _check_one_app(label, [(e.name, e.info) for e in apks if e.info is not None])
    return entries


def read_bundle(path: str | os.PathLike, where: str | None = None) -> list[tuple[str, ApkInfo]]:
    """The APKs of a bundle as (entry name, ApkInfo), base first; see `bundle_entries`."""
    pairs = [(e.name, e.info) for e in bundle_entries(path, where)
             if e.kind == "apk" and e.info is not None]
    return sorted(pairs, key=lambda p: (p[1].split is not None, p[0]))


def _check_one_app(label: str, apks: list[tuple[str, ApkInfo]]) -> None:
    base = [name for name, info in apks if info.split is None]
    if len(base) != 1:
        raise ApkError(label, f"bundle needs exactly one base APK (no split name), has "
                       f"{len(base)}: {', '.join(base) or 'none'}")
    first_name, first = next((n, i) for n, i in apks if i.split is None)
    for name, info in apks:
        if info.package != first.package:
            raise ApkError(f"{label}: entry {name!r}", f"package {info.package!r} differs "
                           f"from the base's {first.package!r} ({first_name})")
        if info.version_code != first.version_code:
            raise ApkError(f"{label}: entry {name!r}", f"versionCode {info.version_code} "
                           f"differs from the base's {first.version_code} ({first_name})")
    splits = [i.split for _, i in apks if i.split is not None]
    dup = sorted({s for s in splits if splits.count(s) > 1})
    if dup:
        raise ApkError(label, f"split {dup[0]!r} appears more than once")


def _bundle_apk(zf: zipfile.ZipFile, item: zipfile.ZipInfo, label: str) -> BundleEntry:
    where = f"{label}: entry {item.filename!r}"
    digest, size = _hash_stream(_open_entry(zf, item, label))
    # A ZipExtFile seeks (by re-reading), so the inner APK's manifest is read in place.
    with _open_entry(zf, item, label) as inner:
        info = _read_zip(inner, where, digest, size)
    return BundleEntry(item.filename, "apk", size, digest, info)


def _open_entry(zf: zipfile.ZipFile, item: zipfile.ZipInfo, label: str) -> IO[bytes]:
    try:
        return zf.open(item)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        raise ApkError(f"{label}: entry {item.filename!r}", f"cannot be read ({exc})") from exc


def _hash_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as fh:
        return _hash_stream(fh)


def _hash_stream(fh: BinaryIO | IO[bytes]) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _read_zip(fh: BinaryIO | IO[bytes], label: str, digest: str, size: int) -> ApkInfo:
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ApkError(label, f"not a zip file, so not an APK ({exc})") from exc
    with zf:
        try:
            item = zf.getinfo(MANIFEST)
        except KeyError:
            raise ApkError(label, f"no {MANIFEST}: a zip file but not an APK") from None
        if item.file_size > MAX_MANIFEST:
            raise ApkError(label, f"{MANIFEST} is {item.file_size} bytes uncompressed, "
                           f"more than {MAX_MANIFEST}")
        try:
            raw = zf.read(item)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
            raise ApkError(label, f"{MANIFEST} cannot be read ({exc})") from exc
        names = zf.namelist()
    manifest = _parse_manifest(raw, label)
    return _info(manifest, names, label, digest, size)


def _parse_manifest(raw: bytes, label: str):
    if raw.lstrip()[:1] == b"<":
        raise ApkError(label, f"{MANIFEST} is text XML; an APK's manifest is binary "
                       "(compiled by aapt)")
    # Here, not at the top: the parser (with asn1crypto and lxml) costs every coordinator
    # start ~0.3 s of CPU, and only an APK upload needs it.
    from pyaxmlparser.axmlprinter import AXMLPrinter

    try:
        printer = AXMLPrinter(raw)
        root = printer.get_xml_obj() if printer.is_valid() else None
    except Exception as exc:  # the decoder raises many kinds on garbage
        raise ApkError(label, f"{MANIFEST} is not a valid binary XML ({exc})") from exc
    if root is None or root.tag != "manifest":
        raise ApkError(label, f"{MANIFEST} is not a valid binary XML manifest")
    return root


def _attr(el, name: str) -> str | None:
    value = el.get(ANDROID_NS + name)
    return value if value is not None else el.get(name)


def _int(value: str | None, label: str, what: str, default: int | None = None) -> int:
    if value is None:
        if default is None:
            raise ApkError(label, f"manifest has no {what}")
        return default
    try:
        return int(value, 0)
    except ValueError:
        raise ApkError(label, f"manifest's {what} {value!r} is not a number") from None


def _info(root, names: list[str], label: str, digest: str, size: int) -> ApkInfo:
    package = root.get("package")
    if not package:
        raise ApkError(label, "manifest has no package")
    if not _PACKAGE_RE.match(package):
        raise ApkError(label, f"manifest's package {package!r} is not a valid package name")
    code = _int(_attr(root, "versionCode"), label, "android:versionCode")
    major = _int(_attr(root, "versionCodeMajor"), label, "android:versionCodeMajor", 0)
    version_code = (major << 32) | (code & 0xFFFFFFFF)
    sdk = root.find("uses-sdk")
    min_sdk = _int(_attr(sdk, "minSdkVersion") if sdk is not None else None, label,
                   "android:minSdkVersion", 1)
    target_sdk = _int(_attr(sdk, "targetSdkVersion") if sdk is not None else None, label,
                      "android:targetSdkVersion", min_sdk)
    split = root.get("split") or None
    abis, densities = _abis(names), _densities(names)
    if split and split.startswith("config."):
        qualifier = split[len("config."):]
        if qualifier in _SPLIT_ABIS:
            abis = sorted(set(abis) | {_SPLIT_ABIS[qualifier]})
        elif qualifier in DENSITIES:
            densities = sorted(set(densities) | {qualifier})
    return ApkInfo(package=package, version_code=version_code,
                   version_name=_attr(root, "versionName") or "", min_sdk=min_sdk,
                   target_sdk=target_sdk, abis=tuple(abis), densities=tuple(densities),
                   split=split, sha256=digest, size=size)


def _abis(names: list[str]) -> list[str]:
    found = {parts[1] for parts in (n.split("/") for n in names)
             if len(parts) >= 3 and parts[0] == "lib" and parts[1] in KNOWN_ABIS}
    return sorted(found)


def _densities(names: list[str]) -> list[str]:
    # res/drawable-xxhdpi-v4/x.png: a density qualifier among the folder's dash parts.
    found = set()
    for name in names:
        parts = name.split("/")
        if len(parts) >= 3 and parts[0] == "res":
            found.update(q for q in parts[1].split("-")[1:] if q in DENSITIES)
    return sorted(found)
