"""Racks on real network stacks: one network namespace per rack, joined to a bridge.

Owns everything the harness makes in the kernel's network configuration: the bridge
``pfbr<id>`` in the root namespace (10.213.N.1/24, N = id % 250 + 1), per rack a namespace
``pf<id>-<name>`` with one end of a veth pair (the other on the bridge), the rack's address
10.213.N.(10+i)/24 and a default route via the bridge, and the rack's fault switches: an
nftables table ``inet pf<id>`` inside the rack's namespace (a partition from the root
namespace, random packet loss) and a tc ``tbf`` qdisc on both veth ends (bandwidth).
`Network.close` removes all of it (deleting a namespace deletes its veth pair and tables).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
from dataclasses import dataclass, field

# A private range that exists only on this machine (never a real network).
PREFIX = "10.213"
# The first rack is .11, the bridge .1: rack addresses stay clear of the gateway.
RACK_HOST_BASE = 10


def subnet_octet(harness_id: int) -> int:
    """N in 10.213.N.0/24, the /24 of harness ``harness_id``."""
    return harness_id % 250 + 1


def run(argv: list[str], *, check: bool = True, timeout: float = 20.0
        ) -> subprocess.CompletedProcess:
    """``argv`` with its output captured; a failure raises naming the command and stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()}")
    return done


def pick_harness_id(start: int | None = None) -> int:
    """A harness id (``pf<pid % 10000>`` first) whose bridge name and /24 no other harness
    on this machine uses now: two harnesses (a test and a helper) never collide."""
    first = os.getpid() % 10000 if start is None else start
    for step in range(10000):
        hid = (first + step) % 10000
        taken_name = run(["ip", "link", "show", f"pfbr{hid}"], check=False).returncode == 0
        subnet = f"{PREFIX}.{subnet_octet(hid)}.0/24"
        taken_net = run(["ip", "-o", "addr", "show", "to", subnet], check=False).stdout.strip()
        if not taken_name and not taken_net:
            return hid
    raise RuntimeError("no free harness id: 250 harnesses' subnets are in use")


def namespaces_available() -> str | None:
    """None when this process can make namespaces, veth pairs, a bridge and nft tables;
    else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root (this process is not)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (iproute2 / Debian nftables)"
    probe = f"pfprobe{os.getpid() % 100000}"
    made = run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        table = run(["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe"],
                    check=False)
        if table.returncode != 0:
            return f"nft inside a namespace failed: {table.stderr.strip()}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


@dataclass
class RackNet:
    """One rack's namespace, its veth pair and its fault switches (nft table, tbf)."""

    harness_id: int
    name: str
    index: int  # 1-based: the rack's address is 10.213.N.(10 + index)
    namespace: str
    address: str
    gateway: str
    veth_root: str  # the end on the bridge, in the root namespace
    veth_rack: str  # the end inside the namespace
    _table_made: bool = field(default=False, repr=False)
    _partitioned: bool = field(default=False, repr=False)
    _loss: int = field(default=0, repr=False)

    @property
    def table(self) -> str:
        return f"pf{self.harness_id}"

    def exec_args(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the rack's namespace (ip netns exec execs it: same PID)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def _nft(self, *args: str) -> None:
        run(self.exec_args(["nft", *args]))

    def _ensure_table(self) -> None:
        """The fault table, made on the first fault: one base chain per fault and
        direction, so that switching a fault off is flushing its own chains."""
        if self._table_made:
            return
        self._nft("add", "table", "inet", self.table)
        for chain, hook in (("partition_in", "input"), ("partition_out", "output"),
                            ("loss_in", "input"), ("loss_out", "output")):
            self._nft("add", "chain", "inet", self.table, chain,
                      f"{{ type filter hook {hook} priority 0; policy accept; }}")
        self._table_made = True

    def partition(self, on: bool) -> None:
        """Drop every packet to or from the bridge address (the root namespace: the
        coordinator and anyone probing the node), as a pulled uplink; lo is untouched, so
        the node still reaches its adb server and phones."""
        self._ensure_table()
        for chain in ("partition_in", "partition_out"):
            self._nft("flush", "chain", "inet", self.table, chain)
        if on:
            self._nft("add", "rule", "inet", self.table, "partition_in",
                      "iifname", "!=", "lo", "ip", "saddr", self.gateway, "drop")
            self._nft("add", "rule", "inet", self.table, "partition_out",
                      "oifname", "!=", "lo", "ip", "daddr", self.gateway, "drop")
        self._partitioned = on

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of the packets in and out of the rack's veth, at random
        (0 removes the loss)."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss percent must be 0-100, got {percent}")
        self._ensure_table()
        for chain in ("loss_in", "loss_out"):
            self._nft("flush", "chain", "inet", self.table, chain)
        if percent:
            self._nft("add", "rule", "inet", self.table, "loss_in", "iifname", self.veth_rack,
                      "numgen", "random", "mod", "100", "<", str(percent), "drop")
            self._nft("add", "rule", "inet", self.table, "loss_out", "oifname", self.veth_rack,
                      "numgen", "random", "mod", "100", "<", str(percent), "drop")
        self._loss = percent

    def bandwidth(self, kbit: int | None) -> None:
        """Cap the rack's link at ``kbit`` kbit/s each way (tc tbf on both veth ends: tbf
        shapes only what leaves an interface); None removes the cap."""
        ends = ((self.exec_args, self.veth_rack), (lambda a: a, self.veth_root))
        for wrap, dev in ends:
            if kbit is None:
                run(wrap(["tc", "qdisc", "del", "dev", dev, "root"]), check=False)
            else:
                if kbit <= 0:
                    raise ValueError(f"bandwidth must be a positive kbit/s, got {kbit}")
                # A burst of at least one MTU-sized frame or tbf passes nothing.
                burst = max(4, kbit // 8)
                run(wrap(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate",
                          f"{kbit}kbit", "burst", f"{burst}kb", "latency", "400ms"]))

    def pids(self) -> list[int]:
        """Processes living in the namespace now (for cleanup and checks)."""
        out = run(["ip", "netns", "pids", self.namespace], check=False).stdout
        return [int(p) for p in out.split()]


class Network:
    """The harness's bridge and rack namespaces; removes them all on `close` (also at
    interpreter exit, for a harness that failed half way)."""

    def __init__(self, harness_id: int) -> None:
        self.harness_id = harness_id
        self.octet = subnet_octet(harness_id)
        self.bridge = f"pfbr{harness_id}"
        self.gateway = f"{PREFIX}.{self.octet}.1"
        self.racks: dict[str, RackNet] = {}
        self._closed = False
        atexit.register(self.close)
        try:
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])
        except BaseException:
            self.close()
            raise

    def add_rack(self, name: str) -> RackNet:
        """A namespace for rack ``name`` joined to the bridge, its lo up and a default
        route via the bridge address."""
        if name in self.racks:
            raise ValueError(f"rack {name!r} exists already")
        index = len(self.racks) + 1
        hid = self.harness_id
        rack = RackNet(harness_id=hid, name=name, index=index,
                       namespace=f"pf{hid}-{name}",
                       address=f"{PREFIX}.{self.octet}.{RACK_HOST_BASE + index}",
                       gateway=self.gateway, veth_root=f"pf{hid}v{index}",
                       veth_rack=f"pf{hid}p{index}")
        # Registered before it exists, so a failure half way is still cleaned up.
        self.racks[name] = rack
        ns = rack.namespace
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", rack.veth_root, "type", "veth", "peer", "name",
             rack.veth_rack])
        run(["ip", "link", "set", rack.veth_root, "master", self.bridge])
        run(["ip", "link", "set", rack.veth_root, "up"])
        run(["ip", "link", "set", rack.veth_rack, "netns", ns])
        run(["ip", "-n", ns, "addr", "add", f"{rack.address}/24", "dev", rack.veth_rack])
        run(["ip", "-n", ns, "link", "set", rack.veth_rack, "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "route", "add", "default", "via", self.gateway])
        return rack

    def close(self) -> None:
        """Remove every namespace (their veths and nft tables go with them), the root
        ends left by a half-made rack, and the bridge. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for rack in self.racks.values():
            run(["ip", "netns", "del", rack.namespace], check=False)
            # A rack that failed before its peer moved leaves the pair in the root namespace.
            run(["ip", "link", "del", rack.veth_root], check=False)
        run(["ip", "link", "del", self.bridge], check=False)
        atexit.unregister(self.close)
