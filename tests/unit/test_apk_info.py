"""read_apk / read_bundle on real APKs made by tests/apk_factory.py, and the bad inputs."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from actors.apps.apk_info import ApkError, bundle_entries, read_apk, read_bundle
from tests.apk_factory import make_apk, make_xapk

PKG = "com.example.clipshare"


def test_base_apk_metadata_comes_from_the_binary_manifest(tmp_path):
    data = make_apk(PKG, 420, "4.2.0", min_sdk=24, target_sdk=34, abis=("arm64-v8a", "x86_64"),
                    density="xxhdpi", size_pad=10_000)
    path = tmp_path / "not-the-name-1.0.apk"
    path.write_bytes(data)
    info = read_apk(path)
    assert (info.package, info.version_code, info.version_name) == (PKG, 420, "4.2.0")
    assert (info.min_sdk, info.target_sdk) == (24, 34)
    assert info.abis == ("arm64-v8a", "x86_64")
    assert info.densities == ("xxhdpi",)
    assert info.split is None
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data) > 10_000
    assert read_apk(data) == info  # bytes read the same as the file


def test_config_splits_name_their_abi_and_density():
    abi = read_apk(make_apk(PKG, 420, split="config.arm64_v8a", abis=("arm64-v8a",)))
    assert (abi.split, abi.abis, abi.version_name) == ("config.arm64_v8a", ("arm64-v8a",), "")
    dpi = read_apk(make_apk(PKG, 420, split="config.xhdpi"))
    assert (dpi.split, dpi.densities, dpi.abis) == ("config.xhdpi", ("xhdpi",), ())


@pytest.mark.parametrize("data, why", [
    (b"hello, not a zip at all", "not a zip file"),
    (None, "no AndroidManifest.xml"),
    (make_apk(None, 1), "manifest has no package"),
    (make_apk(PKG, None), "manifest has no android:versionCode"),
])
def test_bad_apks_are_refused_naming_the_file(data, why):
    if data is None:  # a real zip without a manifest
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("classes.dex", b"dex\n035")
        data = buf.getvalue()
    with pytest.raises(ApkError) as err:
        read_apk(data, where="upload.apk")
    assert err.value.where == "upload.apk"
    assert why in str(err.value)


def test_text_and_garbage_manifests_are_refused():
    for manifest in (b"<manifest package='a.b'/>", b"\x03\x00\x08\x00garbage" * 3):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("AndroidManifest.xml", manifest)
        with pytest.raises(ApkError, match="AndroidManifest.xml"):
            read_apk(buf.getvalue())


def test_xapk_with_two_abi_splits_and_an_obb(tmp_path):
    base = make_apk(PKG, 420, "4.2.0")
    splits = {"config.arm64_v8a": make_apk(PKG, 420, split="config.arm64_v8a",
                                           abis=("arm64-v8a",)),
              "config.x86_64": make_apk(PKG, 420, split="config.x86_64", abis=("x86_64",))}
    path = tmp_path / "clip.xapk"
    path.write_bytes(make_xapk(base, splits, PKG, 420, obbs={"main.420.obb": b"o" * 100}))
    pairs = read_bundle(path)
    assert [name for name, _ in pairs] == ["base.apk", "config.arm64_v8a.apk",
                                           "config.x86_64.apk"]
    assert [info.split for _, info in pairs] == [None, "config.arm64_v8a", "config.x86_64"]
    assert pairs[1][1].sha256 == hashlib.sha256(splits["config.arm64_v8a"]).hexdigest()
    obb = [e for e in bundle_entries(path) if e.kind == "obb"]
    assert [(e.name, e.size) for e in obb] == [(f"Android/obb/{PKG}/main.420.obb", 100)]


@pytest.mark.parametrize("entry", ["../../x", "/etc/passwd", "a/../../b.apk", "..\\..\\x"])
def test_bundle_with_a_path_traversal_entry_is_refused_naming_it(tmp_path, entry):
    path = tmp_path / "evil.xapk"
    path.write_bytes(make_xapk(make_apk(PKG, 1), {}, PKG, 1, extra={entry: b"x"}))
    with pytest.raises(ApkError, match="path traversal") as err:
        read_bundle(path)
    assert repr(entry) in str(err.value)


def test_a_bundle_unpacking_past_the_limit_is_refused_before_anything_is_read(tmp_path):
    # A zip bomb: 8 MiB of zeros packs into a few KiB, well under any upload limit.
    path = tmp_path / "bomb.xapk"
    path.write_bytes(make_xapk(make_apk(PKG, 1), {}, PKG, 1))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"Android/obb/{PKG}/main.1.obb", bytes(8 << 20))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ApkError, match="unpacks to"):
        bundle_entries(path, max_bytes=4 << 20)
    assert [e.kind for e in bundle_entries(path, max_bytes=16 << 20)] == ["apk", "obb"]


def test_bundle_whose_splits_disagree_is_refused(tmp_path):
    path = tmp_path / "mixed.xapk"
    other = {"config.x86": make_apk("com.other.app", 420, split="config.x86")}
    path.write_bytes(make_xapk(make_apk(PKG, 420), other, PKG, 420))
    with pytest.raises(ApkError, match="differs from the base"):
        read_bundle(path)
    late = {"config.x86": make_apk(PKG, 421, split="config.x86")}
    path.write_bytes(make_xapk(make_apk(PKG, 420), late, PKG, 420))
    with pytest.raises(ApkError, match="versionCode 421"):
        read_bundle(path)
    path.write_bytes(make_xapk(make_apk(PKG, 420), {}, PKG, 420,
                               extra={"other.apk": make_apk(PKG, 420)}))
    with pytest.raises(ApkError, match="exactly one base"):
        read_bundle(path)
