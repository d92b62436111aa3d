"""Repository: storage protocol and drivers, catalog, stream pipeline, keys."""
