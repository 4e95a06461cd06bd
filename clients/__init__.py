"""Clients for stream-server: a streaming file/microphone client and the browser caption page (served by the server)."""
