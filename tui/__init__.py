"""The terminal dashboard; it reads the kubelet's observer feed and nothing else."""
