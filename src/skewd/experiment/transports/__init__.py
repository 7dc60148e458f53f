"""Transports between pipeline stages. Each one implements transports.base."""
