"""What a virtual phone can read from an APK: its package name and split name.

Virtual phones accept APKs whose AndroidManifest.xml is plain XML (what the tests and the
demo build); a compiled binary manifest is refused with a clear reason rather than guessed.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass

_PACKAGE = re.compile(rb'\bpackage\s*=\s*"([A-Za-z][\w]*(?:\.[A-Za-z_][\w]*)+)"')
_SPLIT = re.compile(rb'\bsplit\s*=\s*"([^"]+)"')
_LABEL = re.compile(rb'\bandroid:label\s*=\s*"([^"]+)"')


class ApkError(ValueError):
    """The bytes are not an APK this phone can install; the message is pm's failure text."""


@dataclass(frozen=True)
class ApkInfo:
    package: str
    split: str | None
    label: str | None


def read_apk(data: bytes) -> ApkInfo:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = zf.read("AndroidManifest.xml")
    except KeyError:
        raise ApkError("INSTALL_PARSE_FAILED_NO_CERTIFICATES: no AndroidManifest.xml") from None
    except zipfile.BadZipFile:
        raise ApkError("INSTALL_PARSE_FAILED_NOT_APK: not a zip archive") from None
    m = _PACKAGE.search(manifest)
    if m is None:
        raise ApkError("INSTALL_FAILED_INVALID_APK: manifest has no package attribute "
                       "(virtual phones read plain-text manifests only)")
    split = _SPLIT.search(manifest)
    label = _LABEL.search(manifest)
    return ApkInfo(m.group(1).decode(), split.group(1).decode() if split else None,
                   label.group(1).decode() if label else None)


def build_apk(package: str, split: str | None = None, label: str | None = None,
              payload: bytes = b"") -> bytes:
    """A minimal APK a virtual phone accepts (tests and demos use it)."""
    attrs = f'package="{package}"' + (f' split="{split}"' if split else "")
    app = f'<application android:label="{label}"/>' if label else "<application/>"
    manifest = f'<?xml version="1.0"?><manifest {attrs}>{app}</manifest>'
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("AndroidManifest.xml", manifest)
        zf.writestr("classes.dex", payload or b"dex\n035\0")
    return buf.getvalue()
