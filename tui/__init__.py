"""The terminal dashboard; it reads the kubelet's observer feed and nothing else.

``minikubelet tui`` (``tui.app.run_app``) watches a running kubelet through its local
API, the way ``minikubelet get/logs/trace`` do, and never reaches into it:

* ``model``: pure functions from what the kubelet said to what is shown (rows and
  their diff, header facts, container and trace lines);
* ``feed``: the only I/O: a ``KubeletAPI`` (the live local API, or an in-memory fake)
  and the ``Feed`` loops that poll and follow it and post typed ``messages``;
* ``widgets`` and ``screens``: show what they are given (attributes down) and post
  requests up (messages up); ``app`` ties the feed to the screens.
"""
