"""The native runtime: images pulled and unpacked here, containers run by an OCI runtime."""
