"""Pure, I/O-free protocol layer for CRI streaming (exec, attach, port-forward).

``spdy`` frames SPDY/3.1 (the transport kubectl and crictl upgrade to); ``channels``
holds the Kubernetes remotecommand WebSocket channel codec and its small messages.
Nothing here opens a socket: the streaming server and clients are built on top.
"""
