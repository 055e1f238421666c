"""Benchmarks: cost per request against a bare endpoint and a raw-Redis floor (make bench)."""
