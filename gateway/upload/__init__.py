"""POST /v1/recognize: the route, its OpenAPI, the body reader, the audio source and the pipeline."""
