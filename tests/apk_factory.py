"""Real minimal APK files for tests, made here (never downloaded).

Owns `make_apk` (a zip whose AndroidManifest.xml is binary Android XML written by pyaxml,
the same format aapt compiles; lib/<abi>/libx.so entries per ABI; res/ folders per density;
an optional stored random asset to reach a size) and `make_xapk` (manifest.json + APKs +
optional OBB files, laid out as real .xapk files are). The APKs are unsigned: nothing that
reads them here checks a signature. The same arguments give the same bytes.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from xml.sax.saxutils import quoteattr

import pyaxml


def manifest_xml(package: str | None, version_code: int | None, version_name: str | None,
                 *, min_sdk: int = 21, target_sdk: int = 34, split: str | None = None) -> str:
    """The text form of the manifest `make_apk` compiles (None leaves an attribute out)."""
    attrs = ['xmlns:android="http://schemas.android.com/apk/res/android"']
    if package is not None:
        attrs.append(f"package={quoteattr(package)}")
    if version_code is not None:
        attrs.append(f'android:versionCode="{version_code}"')
    if version_name is not None:
        attrs.append(f"android:versionName={quoteattr(version_name)}")
    if split is not None:
        attrs.append(f"split={quoteattr(split)}")
    body = (f'<uses-sdk android:minSdkVersion="{min_sdk}" '
            f'android:targetSdkVersion="{target_sdk}"/>')
    if split is None:
        body += '<application android:label="app" android:hasCode="false"/>'
    else:
        body += '<application android:hasCode="false"/>'
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<manifest {" ".join(attrs)}>'
            f"{body}</manifest>")


def compile_manifest(xml: str) -> bytes:
    """Binary Android XML for a manifest's text, as aapt would write it."""
    axml = pyaxml.AXML()
    axml.from_xml(xml)
    axml.compute()
    return axml.pack()


def _entry(name: str, compress: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    # A fixed time: the same arguments make the same bytes (the same sha256).
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = compress
    return info


def make_apk(package: str | None, version_code: int | None, version_name: str = "1.0", *,
             min_sdk: int = 21, target_sdk: int = 34, abis: tuple[str, ...] = (),
             split: str | None = None, density: str | None = None, size_pad: int = 0,
             seed: int = 0) -> bytes:
    """A minimal real APK; `package`/`version_code` None leave them out (bad-input tests)."""
    manifest = compile_manifest(manifest_xml(
        package, version_code, version_name if split is None else None,
        min_sdk=min_sdk, target_sdk=target_sdk, split=split))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_entry("AndroidManifest.xml"), manifest)
        zf.writestr(_entry("resources.arsc", zipfile.ZIP_STORED), b"")
        for abi in abis:
            zf.writestr(_entry(f"lib/{abi}/libx.so"), b"\x7fELF" + abi.encode() * 8)
        if density:
            zf.writestr(_entry(f"res/drawable-{density}-v4/icon.png"),
                        b"\x89PNG" + density.encode())
        if size_pad > 0:
            # Random bytes do not compress, so the file really is about this much bigger.
            pad = random.Random(seed or version_code or 0).randbytes(size_pad)
            zf.writestr(_entry("assets/pad.bin", zipfile.ZIP_STORED), pad)
    return buf.getvalue()


def make_xapk(base: bytes, splits: dict[str, bytes], package: str, version_code: int, *,
              version_name: str = "1.0", obbs: dict[str, bytes] | None = None,
              extra: dict[str, bytes] | None = None) -> bytes:
    """An .xapk: manifest.json, base.apk, <split>.apk per split, Android/obb/<pkg>/<obb>.

    `extra` adds raw entries under any name (for bad-input tests such as "../../x").
    """
    split_apks = [{"file": "base.apk", "id": "base"}]
    split_apks += [{"file": f"{name}.apk", "id": name} for name in splits]
    expansions = [{"file": f"Android/obb/{package}/{name}",
                   "install_location": "EXTERNAL_STORAGE",
                   "install_path": f"Android/obb/{package}/{name}"} for name in (obbs or {})]
    meta = {"xapk_version": 2, "package_name": package, "name": package,
            "version_code": str(version_code), "version_name": version_name,
            "split_configs": list(splits), "split_apks": split_apks,
            "expansions": expansions}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(_entry("manifest.json", zipfile.ZIP_STORED), json.dumps(meta, indent=2))
        zf.writestr(_entry("base.apk", zipfile.ZIP_STORED), base)
        for name, data in splits.items():
            zf.writestr(_entry(f"{name}.apk", zipfile.ZIP_STORED), data)
        for name, data in (obbs or {}).items():
            zf.writestr(_entry(f"Android/obb/{package}/{name}", zipfile.ZIP_STORED), data)
        for name, data in (extra or {}).items():
            zf.writestr(_entry(name, zipfile.ZIP_STORED), data)
    return buf.getvalue()
