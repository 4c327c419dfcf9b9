"""Convergio Python client."""
