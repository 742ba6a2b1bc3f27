"""The Docker-backed runtime: CRI over the Docker Engine API, as dockershim and cri-dockerd do."""
