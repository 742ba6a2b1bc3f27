"""The slice of the Kubernetes v1 API the kubelet core reads, as typed, frozen dataclasses.

Manifests arrive as plain dicts (YAML or JSON); :meth:`Pod.from_dict` reads the fields
the node needs, applies the API server's defaults, and keeps the original dict in
``raw`` so nothing is lost. Checking that the values make sense is the validation
module's job; parsing only refuses values of the wrong type.
"""

from __future__ import annotations

from minikubelet.api.pod import (
    Container,
    ContainerPort,
    ObjectMeta,
    Pod,
    PodSpec,
    Probe,
    PullPolicy,
    RestartPolicy,
    TerminationMessagePolicy,
)

__all__ = [
    "Container",
    "ContainerPort",
    "ObjectMeta",
    "Pod",
    "PodSpec",
    "Probe",
    "PullPolicy",
    "RestartPolicy",
    "TerminationMessagePolicy",
]
