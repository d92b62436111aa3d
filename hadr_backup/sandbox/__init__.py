"""Local instances, a seeded bundler-like schema and a write workload, for the demo, drills and tests."""
