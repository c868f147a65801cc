"""desq's read-only S3-compatible API: pure core (auth, listing, XML)."""
