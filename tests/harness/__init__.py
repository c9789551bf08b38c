"""The fault-and-scale harness (issue 22): a whole farm laid out as a real one, each rack in
its own network namespace, broken on purpose while invariants are checked.

Owns the package's public names: `HarnessFarm` and `Rack` (tests.harness.farm: the
processes and the fault primitives), `Network`, `RackNet` and `namespaces_available`
(tests.harness.netns: the namespaces, bridge and nftables/tc switches).
"""

from tests.harness.farm import HarnessFarm, Rack
from tests.harness.netns import Network, RackNet, namespaces_available

__all__ = ["HarnessFarm", "Network", "Rack", "RackNet", "namespaces_available"]
