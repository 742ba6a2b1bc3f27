"""Container logs: the CRI log format, reading a log back as ``logs`` shows it, rotation."""
