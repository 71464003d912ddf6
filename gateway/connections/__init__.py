"""Bounds on what one client connection can make the process hold, below the application: pieces of
uvicorn's protocols and transports (gateway.server puts them together)."""
