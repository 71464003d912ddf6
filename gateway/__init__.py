"""dataflow-gateway: a REST/WebSocket front for Knovvu Data Flow."""

__version__ = "0.1.0"
