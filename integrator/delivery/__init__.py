"""Durable delivery: the store, retry policy, circuit breakers, rate limits and the DLQ."""
