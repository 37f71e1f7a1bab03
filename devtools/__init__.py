"""Developer tooling: bringing up the local infrastructure and the fleet (``make run``, tests)."""
