"""The relay core: one Session pairs a client with one upstream stream. No FastAPI, no gRPC."""
