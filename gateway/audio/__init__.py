"""Audio formats, conversion, and upload containers and decoders. Pure code except the decoder thread."""
