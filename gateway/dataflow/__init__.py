"""Data Flow's JSON vocabulary, shared by upstream, adapters, uploads and the simulator (no protobuf)."""
