"""minikubelet: a Kubernetes node in Python that drives containers through the CRI."""

__version__ = "0.1.0"
