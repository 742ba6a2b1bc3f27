"""Seccomp for the native runtime: our RuntimeDefault profile (data) and Localhost profiles."""
