"""What the REST and UI adapters share over HTTP: middleware, error responses, receipt
headers, and each request's audit row."""
