"""Container lifecycle: postStart and preStop hooks."""
