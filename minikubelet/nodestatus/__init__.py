"""The Node in the API server: its registration and status (``pkg/kubelet/nodestatus``).

``facts`` gathers what the status is made from (the host, the runtime's CRI Status);
``setters`` fills the Node from those facts, purely; ``manager`` registers the Node
and keeps its status at the kubelet's cadence.
"""

from minikubelet.nodestatus.facts import HostFacts, Pressure, RuntimeFacts, gather_host_facts
from minikubelet.nodestatus.manager import Allocatable, NodeStatusManager
from minikubelet.nodestatus.setters import KUBELET_VERSION

__all__ = (
    "KUBELET_VERSION",
    "Allocatable",
    "HostFacts",
    "NodeStatusManager",
    "Pressure",
    "RuntimeFacts",
    "gather_host_facts",
)
