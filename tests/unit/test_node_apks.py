"""The node's APK cache and its choice of splits per phone (no processes)."""

from __future__ import annotations

import hashlib

import pytest

from actors.node.apk_cache import ApkCache
from actors.node.installs import density_dpi, pick_splits
from protocol.errors import ValidationError
from protocol.messages import ApkFileRef, ApkPut

SHA = "ab" * 32


def ref(name, split=None, abi=None, density=None):
    return ApkFileRef(sha256=SHA, name=name, size=1, split=split, abi=abi, density=density)


def test_splits_for_abi_and_density():
    files = [ref("base"), ref("x86", "config.x86_64", abi="x86_64"),
             ref("v7", "config.armeabi_v7a", abi="armeabi-v7a"),
             ref("ldpi", "config.ldpi", density="ldpi"), ref("xhdpi", "config.xhdpi", density="xhdpi"),
             ref("xxhdpi", "config.xxhdpi", density="xxhdpi"), ref("feature", "feature")]
    names = lambda picked: [f.name for f in picked]  # noqa: E731
    assert names(pick_splits(files, ["arm64-v8a", "armeabi-v7a"], 420)) == \
        ["base", "v7", "xxhdpi", "feature"]
    assert names(pick_splits(files, ["x86_64", "armeabi-v7a"], 400)) == \
        ["base", "x86", "xxhdpi", "feature"]  # 400 is as close to 320 as to 480: the higher
    assert names(pick_splits(files, ["x86_64"], 120)) == ["base", "x86", "ldpi", "feature"]
    with pytest.raises(ValidationError, match="INSTALL_FAILED_NO_MATCHING_ABIS: no split for "
                                              "the phone's ABIs \\(mips\\)"):
        pick_splits(files, ["mips"], 420)
    with pytest.raises(ValidationError, match="2 base APKs"):
        pick_splits([ref("a"), ref("b")], ["arm64-v8a"], 420)
    assert density_dpi("config.420dpi") == 420 and density_dpi("tvdpi") == 213
    assert density_dpi("en") is None


def test_cache_keeps_only_whole_files_whose_hash_matches(tmp_path):
    cache = ApkCache(tmp_path / "cache")
    data = b"apk bytes " * 1000
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(ValidationError, match="apk_put.sha256: 'nope'"):
        cache.put(ApkPut(sha256="nope", size=10, offset=0, data=b"x"))
    with pytest.raises(ValidationError, match="apk_put.last: the last chunk ends at 5"):
        cache.put(ApkPut(sha256=sha, size=len(data), offset=0, data=data[:5], last=True))
    with pytest.raises(ValidationError, match="apk_put.offset: bytes 0..10000 are outside"):
        cache.put(ApkPut(sha256=sha, size=10, offset=0, data=data))
    assert cache.put(ApkPut(sha256=sha, size=len(data), offset=0, data=data[:4000])) == \
        {"stored": False, "held": 4000}
    # A re-sent chunk is harmless; one past what is held names the offset to send from.
    assert cache.put(ApkPut(sha256=sha, size=len(data), offset=0, data=data[:4000]))["held"] == 4000
    with pytest.raises(ValidationError, match="holds 4000 bytes"):
        cache.put(ApkPut(sha256=sha, size=len(data), offset=8000, data=data[8000:]))
    assert cache.missing([sha]) == [sha]
    assert cache.put(ApkPut(sha256=sha, size=len(data), offset=4000, data=data[4000:],
                            last=True)) == {"stored": True}
    assert cache.path(sha).read_bytes() == data and cache.missing([sha, sha]) == []
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{sha}.apk"]
    with pytest.raises(ValidationError, match=r"sha256s\[1\]"):
        cache.missing([sha, "XYZ"])
