"""The API objects a pod's volumes and environment read: ConfigMaps, Secrets and
service account tokens, as the kubelet's ``configmap``, ``secret`` and ``token`` managers
give them.

This package's top level holds only the seam (:class:`ObjectSource`, what it returns and
its errors), so the volume manager and the environment builder depend on it without
knowing the API client. :mod:`.managers` holds the API-backed implementation, made by
the composition root in API server mode.
"""

from minikubelet.kubeapi.objects.source import (
    ConfigMapData,
    ObjectError,
    ObjectSource,
    SecretData,
    TokenSpec,
)

__all__ = [
    "ConfigMapData",
    "ObjectError",
    "ObjectSource",
    "SecretData",
    "TokenSpec",
]
