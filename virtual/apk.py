"""What a virtual phone reads from an APK before installing it, and pm's words for a bad one.

A real package manager parses the binary AndroidManifest.xml; so does a virtual phone, with
the farm's own parser (`actors.apps.apk_info.read_apk`, the one the APK library uses). A
plain-text manifest (what `build_apk` writes for older tests and the demo) is read too: a
virtual phone's leniency, not a real phone's. Signatures are not checked. A bad APK is an
`ApkError` whose message is pm's failure text (INSTALL_PARSE_FAILED_NOT_APK: ... and kin).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass

_PACKAGE = re.compile(rb'\bpackage\s*=\s*"([A-Za-z][\w]*(?:\.[A-Za-z_][\w]*)+)"')
_SPLIT = re.compile(rb'\bsplit\s*=\s*"([^"]+)"')
_LABEL = re.compile(rb'\bandroid:label\s*=\s*"([^"]+)"')
_VERSION_CODE = re.compile(rb'\bandroid:versionCode\s*=\s*"(\d+)"')
_VERSION_NAME = re.compile(rb'\bandroid:versionName\s*=\s*"([^"]*)"')
_MIN_SDK = re.compile(rb'\bandroid:minSdkVersion\s*=\s*"(\d+)"')
_TARGET_SDK = re.compile(rb'\bandroid:targetSdkVersion\s*=\s*"(\d+)"')
_LIB = re.compile(r"^lib/([^/]+)/[^/]+\.so$")


class ApkError(ValueError):
    """The bytes are not an APK this phone can install; the message is pm's failure text."""


@dataclass(frozen=True)
class ApkInfo:
    """What the phone's package manager needs of one APK of an install session."""

    package: str
    split: str | None
    label: str | None
    version_code: int = 1
    version_name: str = ""
    min_sdk: int = 1
    target_sdk: int = 1
    abis: tuple[str, ...] = ()  # from its lib/<abi>/*.so entries


def _lib_abis(zf: zipfile.ZipFile) -> tuple[str, ...]:
    found = []
    for name in zf.namelist():
        m = _LIB.match(name)
        if m and m.group(1) not in found:
            found.append(m.group(1))
    return tuple(found)


def read_apk(data: bytes) -> ApkInfo:
    """The APK's package, split, version and native ABIs; ApkError with pm's text."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = zf.read("AndroidManifest.xml")
            abis = _lib_abis(zf)
    except KeyError:
        raise ApkError("INSTALL_PARSE_FAILED_NOT_APK: Failed to parse base.apk: "
                       "no AndroidManifest.xml") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError):
        raise ApkError("INSTALL_PARSE_FAILED_NOT_APK: Failed to parse base.apk: "
                       "Failed to load asset path (not a zip archive)") from None
    if manifest.lstrip()[:1] == b"<":
        return _plain(manifest, abis)
    return _binary(data, abis)


def _binary(data: bytes, abis: tuple[str, ...]) -> ApkInfo:
    """A compiled manifest, read by the farm's APK parser (the library's)."""
    try:
        from actors.apps.apk_info import ApkError as LibraryError, read_apk as library_read
    except ImportError:  # the library's parser is not in this tree
        raise ApkError("INSTALL_PARSE_FAILED_BAD_MANIFEST: binary manifest and no parser "
                       "for it (actors.apps.apk_info)") from None
    try:
        info = library_read(data)
    except LibraryError as exc:
        why = exc.why
        if "zip" in why.lower():
            raise ApkError(f"INSTALL_PARSE_FAILED_NOT_APK: Failed to parse base.apk: {why}") \
                from None
        if "package" in why.lower():
            raise ApkError(f"INSTALL_PARSE_FAILED_BAD_PACKAGE_NAME: <manifest> does not specify "
                           f"package ({why})") from None
        raise ApkError(f"INSTALL_PARSE_FAILED_BAD_MANIFEST: {why}") from None
    # The phone goes by the native libraries present (lib/<abi>/), not a split's name.
    return ApkInfo(info.package, info.split, None, int(info.version_code),
                   info.version_name or "", int(info.min_sdk or 1),
                   int(info.target_sdk or info.min_sdk or 1), abis)


def _plain(manifest: bytes, abis: tuple[str, ...]) -> ApkInfo:
    m = _PACKAGE.search(manifest)
    if m is None:
        raise ApkError("INSTALL_PARSE_FAILED_BAD_PACKAGE_NAME: <manifest> does not specify "
                       "package")

    def group(pattern: re.Pattern, default=None):
        found = pattern.search(manifest)
        return found.group(1).decode() if found else default

    min_sdk = int(group(_MIN_SDK, "1"))
    return ApkInfo(m.group(1).decode(), group(_SPLIT), group(_LABEL),
                   int(group(_VERSION_CODE, "1")), group(_VERSION_NAME, ""), min_sdk,
                   int(group(_TARGET_SDK, str(min_sdk))), abis)


def build_apk(package: str, split: str | None = None, label: str | None = None,
              payload: bytes = b"", *, version_code: int = 1, version_name: str = "1.0",
              abis: tuple[str, ...] = ()) -> bytes:
    """A minimal APK with a plain-text manifest that a virtual phone accepts (tests and demos
    use it; real phones want tests/apk_factory.py's binary ones)."""
    attrs = (f'package="{package}"' + (f' split="{split}"' if split else "")
             + f' android:versionCode="{version_code}" android:versionName="{version_name}"')
    app = f'<application android:label="{label}"/>' if label else "<application/>"
    manifest = f'<?xml version="1.0"?><manifest {attrs}>{app}</manifest>'
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("AndroidManifest.xml", manifest)
        zf.writestr("classes.dex", payload or b"dex\n035\0")
        for abi in abis:
            zf.writestr(f"lib/{abi}/libx.so", b"\x7fELF")
    return buf.getvalue()
