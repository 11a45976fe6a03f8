"""A fake Codat for tests and demos: Codat's API, signed webhooks, and a control API to misbehave."""
