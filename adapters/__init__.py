"""Cloud adapters: thin translators between each platform and the core service layer."""
