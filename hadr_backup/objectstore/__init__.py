"""S3 / MinIO buckets as a source: protection, the versioned mirror with manifests, state at T, restore."""

KIND = "s3"
