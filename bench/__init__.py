"""Benchmarks of the gateway (issue 7): ingest, end to end, scale. See bench/RESULTS.md."""
