"""Gateway: the public HTTP surface (auth, validation, idempotency, webhooks intake)."""
