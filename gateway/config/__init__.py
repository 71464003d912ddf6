"""Checking and showing the configuration: the environment's ``GATEWAY_*`` variables against the
settings' fields, problems as one line per variable, and the effective settings with secrets masked.
Knows the settings' field names, never imports the settings class (it imports this)."""
