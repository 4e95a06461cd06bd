"""Python clients of the server's protocols: ``v1`` (the library) and ``stream`` (the ``stream-client`` CLI)."""
