"""Benchmarks of alpha_data against raw asyncpg and redis-py (run: ``make bench``)."""
