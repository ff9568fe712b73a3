"""What both adapters (REST and UI) share over HTTP: middleware, error responses, receipt
headers, and each request's audit row."""
