"""Actors of the Convergio daemon (installed as convergiod.actors)."""
