"""Uploaded documents: extraction, encryption at rest, ownership, expiry."""
