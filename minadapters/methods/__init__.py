"""Adapter methods: per-location layers that hold each adapter's parameters and compose them."""
