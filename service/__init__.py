"""The ASGI side: webhook receiver, JSON API, stream, Codat client, and the `synctrack` command."""
