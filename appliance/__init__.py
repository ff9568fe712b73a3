"""Privacy-first, self-hosted small-language-model appliance."""

__version__ = "0.1.0"
