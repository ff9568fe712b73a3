"""HTTP adapters for internal tools: REST v1 (and later the compatible endpoints)."""
