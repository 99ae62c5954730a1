"""Explicit forwards of the supported architectures. They never name an adapter method."""
