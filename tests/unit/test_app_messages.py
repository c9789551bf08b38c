"""The issue-20 link messages (APK cache, installs) through the one codec."""

from __future__ import annotations

import pytest

from protocol.codec import decode, encode, make_command, make_envelope
from protocol.errors import ProtocolError
from protocol.messages import (MAX_APK_CHUNK, ApkFileRef, ApkHave, ApkPut, CommandResult,
                               InstallApp, UninstallApp)


def _round_trip(body):
    return decode(encode(make_envelope(body, "coordinator", "n1")), "n1").body


def test_app_commands_round_trip_with_bytes_and_files():
    chunk = bytes(range(256)) * 8
    put = make_command("", ApkPut(sha256="ab" * 32, size=2048, offset=0, data=chunk, last=True))
    assert _round_trip(put) == put
    have = make_command("", ApkHave(sha256s=["ab" * 32, "cd" * 32]))
    assert _round_trip(have) == have
    files = [ApkFileRef(sha256="ab" * 32, name="base.apk", size=10),
             ApkFileRef(sha256="cd" * 32, name="split_config.arm64_v8a.apk", size=5,
                        split="config.arm64_v8a", abi="arm64-v8a")]
    install = make_command("127.0.0.1:7001", InstallApp(
        install_id="i1", package="com.phonefarm.clipshare", version_code=420, files=files,
        allow_downgrade=True, lease_s=60))
    assert _round_trip(install) == install
    gone = make_command("127.0.0.1:7001", UninstallApp(install_id="i2", package="com.x.y"))
    assert _round_trip(gone) == gone
    answer = CommandResult(command_id="c", serial="s", status="missing_apk",
                           data={"missing": ["ab" * 32]})
    assert _round_trip(answer) == answer


def test_a_full_chunk_fits_the_message_limit_and_a_bad_field_is_named():
    put = make_command("", ApkPut(sha256="ab" * 32, size=MAX_APK_CHUNK, offset=0,
                                  data=b"\0" * MAX_APK_CHUNK))
    assert _round_trip(put).action.size == MAX_APK_CHUNK
    raw = encode(make_envelope(make_command("", ApkHave(sha256s=["x"])), "coordinator", "n1"))
    with pytest.raises(ProtocolError, match=r"\$.body.action.sha256s"):
        decode(raw.replace(b'"sha256s":["x"]', b'"sha256s":"x"'), "coordinator")
