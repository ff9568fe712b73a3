"""Server-rendered pages (Jinja) with htmx partials."""
