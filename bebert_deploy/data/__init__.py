"""Dataset readers, fetchers and metrics."""
