"""Runnable examples of alpha_data."""
