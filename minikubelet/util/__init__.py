"""Small helpers shared by the kubelet core and the bundled runtimes (which may import them)."""
