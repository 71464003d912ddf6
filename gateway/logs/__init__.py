"""Logging: the formats (JSON or readable text), the access log, and redaction of credentials.

Credentials are redacted where a line is made (the access log builds its path from redacted parts;
the WebSocket handshake lines get their header values masked by name); a handler filter that masks
known credential shapes and the process's own secrets is the backstop for every other line.
"""
