"""ApkLibrary on a real farm database (both engines) and a real DATA/apks folder."""

from __future__ import annotations

import hashlib

import pytest

from actors.apps.apk_info import ApkError
from actors.apps.library import (ApkInUse, ApkLibrary, UploadTooLarge, UploadTruncated,
                                 pinned_by)
from tests.apk_factory import make_apk, make_xapk

PKG = "com.example.clipshare"


async def _chunks(data: bytes, size: int = 1000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def _add(lib: ApkLibrary, data: bytes, **kw):
    upload = await lib.receive(_chunks(data), expected=len(data))
    return await lib.add_upload(upload, label="test upload", **kw)


def _xapk(code: int = 420, name: str = "4.2.0") -> tuple[bytes, dict[str, bytes]]:
    base = make_apk(PKG, code, name, size_pad=5000)
    splits = {"config.arm64_v8a": make_apk(PKG, code, split="config.arm64_v8a",
                                           abis=("arm64-v8a",)),
              "config.x86_64": make_apk(PKG, code, split="config.x86_64", abis=("x86_64",)),
              "config.xxhdpi": make_apk(PKG, code, split="config.xxhdpi")}
    return make_xapk(base, splits, PKG, code, version_name=name,
                     obbs={f"main.{code}.{PKG}.obb": b"o" * 300}), {"base": base, **splits}


pytestmark = pytest.mark.usefixtures("engine")


async def test_bundle_stored_once_by_hash_with_rows_and_files_for(db, tmp_path):
    lib = ApkLibrary(tmp_path / "apks", db)
    bundle, parts = _xapk()
    result = await _add(lib, bundle, app_name="clipshare", actor="admin")
    assert (result.app, result.package, result.version_name, result.version_code) == (
        "clipshare", PKG, "4.2.0", 420)
    assert result.added == 5  # base, three splits, one OBB
    stored = sorted(p.name for p in (tmp_path / "apks").iterdir() if p.is_file())
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in parts.items()}
    assert f"{sha['base']}.apk" in stored and len(stored) == 5
    assert list((tmp_path / "apks" / "incoming").iterdir()) == []
    # The same upload again stores nothing more.
    again = await _add(lib, bundle, app_name="clipshare")
    assert again.added == 0 and len(again.files) == 5
    files = await lib.files_for("clipshare", "4.2.0")
    assert [f.split for f in files] == [None, "config.arm64_v8a", "config.x86_64",
                                        "config.xxhdpi"]  # APKs only: OBBs are not installed
    assert [f.kind for f in await lib.files_for("clipshare", "4.2.0", obb=True)].count(
        "obb") == 1
    assert files == await lib.files_for(PKG, "420")
    abi = next(f for f in files if f.split == "config.x86_64")
    assert abi.abis == ("x86_64",) and abi.path.read_bytes() == parts["config.x86_64"]
    assert await lib.files_for("clipshare", "9.9") == []
    listed = await lib.list("clipshare")
    assert len(listed) == 5 and {r["version_code"] for r in listed} == {420}
    row = await db._one("SELECT app_name, package_name FROM app_registry")
    assert tuple(row) == ("clipshare", PKG)


async def test_plain_apk_then_a_split_alone_and_removal(db, tmp_path):
    lib = ApkLibrary(tmp_path / "apks", db)
    split = make_apk(PKG, 500, split="config.x86", abis=("x86",))
    with pytest.raises(ApkError, match="no base APK of that version"):
        await _add(lib, split)
    base = await _add(lib, make_apk(PKG, 500, "5.0"))
    assert (base.app, base.added) == (PKG, 1)  # no registry app: named by its package
    joined = await _add(lib, split)
    assert joined.version_name == "5.0" and joined.files[0].split == "config.x86"
    # Another base for the same version code is refused, naming what is there.
    with pytest.raises(ApkError, match="different base already"):
        await _add(lib, make_apk(PKG, 500, "5.0", size_pad=10))
    assert await pinned_by(db, base.files[0].apk_id) == []
    removed = await lib.remove(joined.files[0].apk_id, actor="admin")
    assert not removed.path.exists()
    assert [f.split for f in await lib.files_for(PKG, "5.0")] == [None]
    with pytest.raises(LookupError):
        await lib.remove(joined.files[0].apk_id)


async def test_bad_uploads_keep_nothing(db, tmp_path):
    lib = ApkLibrary(tmp_path / "apks", db, max_bytes=20_000)
    incoming = tmp_path / "apks" / "incoming"
    with pytest.raises(UploadTooLarge):
        await _add(lib, make_apk(PKG, 1, size_pad=30_000))
    data = make_apk(PKG, 1)
    with pytest.raises(UploadTruncated, match="nothing was kept"):
        await lib.receive(_chunks(data[:-10]), expected=len(data))
    bad = [b"PK\x03\x04 not really a zip", make_apk(None, 1),
           make_xapk(make_apk(PKG, 1), {}, PKG, 1, extra={"../../x": b"x"})]
    for data in bad:
        with pytest.raises(ApkError):
            await _add(lib, data)
    assert list(incoming.iterdir()) == []
    assert [p for p in (tmp_path / "apks").iterdir() if p.is_file()] == []
    assert await lib.list() == []


async def test_a_pinned_version_is_not_removed(db, tmp_path):
    lib = ApkLibrary(tmp_path / "apks", db)
    added = await _add(lib, make_apk(PKG, 600, "6.0"), app_name="clipshare")
    apk_id = added.files[0].apk_id
    await db._write("INSERT INTO app_pins (package, app, version, version_code, target,"
                    " created_at) VALUES (?, 'clipshare', '6.0', 600, 'client:1',"
                    " '2026-01-01 00:00:00')", (PKG,))
    assert [p["target"] for p in await pinned_by(db, apk_id)] == ["client:1"]
    with pytest.raises(ApkInUse, match="pinned by client:1"):
        await lib.remove(apk_id)
    assert added.files[0].path.exists()


async def test_an_apkm_bundle_and_files_shared_across_versions(db, tmp_path):
    """An .apkm (info.json, base.apk, split_config.*.apk) reads like an .xapk; an OBB whose
    bytes two versions share is stored once and stays until the last row naming it goes."""
    import io
    import json
    import zipfile
    lib = ApkLibrary(tmp_path / "apks", db)
    obb = {"main.1.obb": b"same" * 50}
    for code in (700, 701):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("info.json", json.dumps({"pname": PKG, "versioncode": code}))
            zf.writestr("base.apk", make_apk(PKG, code, f"7.{code - 700}"))
            zf.writestr("split_config.arm64_v8a.apk",
                        make_apk(PKG, code, split="config.arm64_v8a", abis=("arm64-v8a",)))
            zf.writestr("Android/obb/x/main.1.obb", obb["main.1.obb"])
        result = await _add(lib, buf.getvalue())
        assert result.added == 3 and result.version_name == f"7.{code - 700}"
    obbs = [f for f in await lib.list() if f["kind"] == "obb"]
    assert len(obbs) == 2 and obbs[0]["sha256"] == obbs[1]["sha256"]
    stored = lib.file_path(obbs[0]["sha256"], "obb")
    await lib.remove(obbs[0]["apk_id"])
    assert stored.exists()  # the other version's row still names it
    await lib.remove(obbs[1]["apk_id"])
    assert not stored.exists()
