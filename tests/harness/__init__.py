"""Test harness: a real containerd, a local registry and locally built images."""
