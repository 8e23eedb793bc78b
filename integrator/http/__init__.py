"""HTTP: the webhook server, signature schemes, the HTTP client and auth providers."""
