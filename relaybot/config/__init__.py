"""The configuration: its schema (types, defaults, bounds) and the TOML loader."""
