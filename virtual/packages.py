"""A virtual phone's package manager: installed packages with versions, and install sessions.

Owns what `pm` answers about packages: which are installed (with version code and name,
SDK levels, split names and the ABI chosen for their native code), the open install
sessions of `pm install-create` .. `install-commit` / `install-abandon`, and the checks a
real package manager makes before it installs (Android 11's failure strings): an APK that
is not one, splits of another package or version, native code for none of the phone's ABIs
(`ro.product.cpu.abilist`), a lower version code without `-d`, an SDK level too high.
The phone's UI (its launcher and apps) follows installs and uninstalls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from virtual.apk import ApkError, ApkInfo, read_apk

# The demo app ships installed with this version (a phone of the farm as it was set up).
PRESET_VERSIONS = {"com.phonefarm.clipshare": (410, "4.1.0")}
DEFAULT_ABILIST = "arm64-v8a,armeabi-v7a,armeabi"


@dataclass
class InstalledPackage:
    """One installed package as `dumpsys package` shows it."""

    package: str
    version_code: int
    version_name: str
    min_sdk: int = 21
    target_sdk: int = 30
    splits: list[str] = field(default_factory=lambda: ["base"])
    primary_abi: str | None = None
    system: bool = False


@dataclass
class InstallSession:
    """One `pm install-create` session: its flags and the APKs written into it by name."""

    session_id: int
    allow_downgrade: bool = False
    apks: dict[str, bytes] = field(default_factory=dict)


class PmFailure(Exception):
    """An install refused; the message is what follows "Failure [" ... "]"."""


class PackageManager:
    """Installed packages and install sessions of one virtual phone."""

    def __init__(self, props: dict[str, str], first_session: int,
                 on_install: Callable[[str, str | None], None],
                 on_uninstall: Callable[[str], bool]) -> None:
        self.props = props  # the phone's properties: abilist and SDK level are read live
        self.installed: dict[str, InstalledPackage] = {}
        self.sessions: dict[int, InstallSession] = {}
        self._next_session = first_session
        self._on_install = on_install
        self._on_uninstall = on_uninstall

    # --- what is installed ------------------------------------------------------------------
    def preset(self, package: str, *, system: bool) -> None:
        """A package the phone came with (the UI's apps at boot)."""
        code, name = PRESET_VERSIONS.get(package, (30 if system else 1, "11" if system else "1.0"))
        self.installed.setdefault(package, InstalledPackage(package, code, name, system=system))

    def forget(self, package: str) -> None:
        self.installed.pop(package, None)

    def abilist(self) -> list[str]:
        text = self.props.get("ro.product.cpu.abilist") or self.props.get("ro.product.cpu.abi", "")
        return [a for a in text.split(",") if a]

    def list_lines(self, names: list[str], *, show_version: bool) -> str:
        out = []
        for name in sorted(names):
            pkg = self.installed.get(name)
            suffix = f" versionCode:{pkg.version_code}" if show_version and pkg else ""
            out.append(f"package:{name}{suffix}\n")
        return "".join(out)

    def dumpsys(self, package: str) -> str:
        """`dumpsys package NAME` as Android 11 prints the parts scripts read."""
        pkg = self.installed.get(package)
        if pkg is None:
            return f"Unable to find package: {package}\n"
        flags = "SYSTEM HAS_CODE ALLOW_CLEAR_USER_DATA" if pkg.system else \
            "HAS_CODE ALLOW_CLEAR_USER_DATA ALLOW_BACKUP"
        return (
            "Packages:\n"
            f"  Package [{package}] (7a1b2c3):\n"
            f"    userId={10000 + (sum(map(ord, package)) % 9000)}\n"
            f"    pkg=Package{{7a1b2c3 {package}}}\n"
            f"    codePath=/data/app/{package}-1\n"
            f"    primaryCpuAbi={pkg.primary_abi or 'null'}\n"
            f"    versionCode={pkg.version_code} minSdk={pkg.min_sdk} "
            f"targetSdk={pkg.target_sdk}\n"
            f"    versionName={pkg.version_name}\n"
            f"    splits=[{', '.join(pkg.splits)}]\n"
            f"    flags=[ {flags} ]\n")

    def uninstall(self, package: str) -> bool:
        pkg = self.installed.get(package)
        if pkg is None or pkg.system or not self._on_uninstall(package):
            return False
        del self.installed[package]
        return True

    # --- sessions -----------------------------------------------------------------------------
    def create(self, flags: list[str]) -> int:
        session = InstallSession(self._next_session, allow_downgrade="-d" in flags)
        self._next_session += 1
        self.sessions[session.session_id] = session
        return session.session_id

    def commit(self, session_id: int) -> str:
        """Install what the session holds; the session ends either way. PmFailure."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            raise PmFailure(f"INSTALL_FAILED_INTERNAL_ERROR: Invalid session {session_id}")
        return self.install(list(session.apks.items()), allow_downgrade=session.allow_downgrade)

    def abandon(self, session_id: int) -> bool:
        return self.sessions.pop(session_id, None) is not None

    # --- installing ---------------------------------------------------------------------------
    def install(self, apks: list[tuple[str, bytes]], *, allow_downgrade: bool) -> str:
        """Check and install a base APK with its splits; the package name. PmFailure."""
        if not apks:
            raise PmFailure("INSTALL_FAILED_INVALID_APK: No APKs in session")
        infos: list[tuple[str, ApkInfo]] = []
        for name, data in apks:
            try:
                infos.append((name, read_apk(data)))
            except ApkError as exc:
                raise PmFailure(str(exc).replace("base.apk", f"{name}.apk", 1)) from None
        bases = [(n, i) for n, i in infos if i.split is None]
        if len(bases) != 1:
            raise PmFailure("INSTALL_FAILED_INVALID_APK: need exactly one base APK, got "
                            f"{len(bases)}")
        base = bases[0][1]
        for name, info in infos:
            if info.package != base.package:
                raise PmFailure(f"INSTALL_FAILED_INVALID_APK: Split {info.split} is for "
                                f"{info.package}, not {base.package}: Inconsistent package "
                                f"{info.package} in {name}.apk; expected {base.package}")
            if info.version_code != base.version_code:
                raise PmFailure(f"INSTALL_FAILED_INVALID_APK: Inconsistent version "
                                f"{info.version_code} in {name}.apk; expected "
                                f"{base.version_code}")
        sdk = int(self.props.get("ro.build.version.sdk", "30") or 30)
        if base.min_sdk > sdk:
            raise PmFailure(f"INSTALL_FAILED_OLDER_SDK: Failed parse during installPackageLI: "
                            f"/data/app/vmdl.tmp/base.apk (at Binary XML file line #7): "
                            f"Requires newer sdk version #{base.min_sdk} (current version is "
                            f"#{sdk})")
        shipped = [abi for _, i in infos for abi in i.abis]
        primary = None
        if shipped:
            primary = next((abi for abi in self.abilist() if abi in shipped), None)
            if primary is None:
                raise PmFailure("INSTALL_FAILED_NO_MATCHING_ABIS: Failed to extract native "
                                "libraries, res=-113")
        current = self.installed.get(base.package)
        if current is not None and base.version_code < current.version_code \
                and not allow_downgrade:
            raise PmFailure(f"INSTALL_FAILED_VERSION_DOWNGRADE: Downgrade detected: Update "
                            f"version code {base.version_code} is older than current "
                            f"{current.version_code}")
        self._on_install(base.package, base.label)
        self.installed[base.package] = InstalledPackage(
            base.package, base.version_code, base.version_name, base.min_sdk, base.target_sdk,
            ["base"] + [i.split for _, i in infos if i.split], primary,
            system=current.system if current is not None else False)
        return base.package
