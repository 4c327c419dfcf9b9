"""Providers: one async interface over every kind of model endpoint.

A provider turns a ``ProviderRequest`` into a streamed answer by calling the ``Sink`` (text,
tool-call fragments) as output arrives, and returns an ``Outcome`` (finish reason, the usage
the upstream reported, if any). Failures are raised as ``ProviderError``.
"""

from .base import Outcome, Provider, ProviderRequest, Sink

__all__ = ["Outcome", "Provider", "ProviderRequest", "Sink"]
