"""The gRPC client side of Data Flow (the only package that imports grpc and protobuf).

gRPC's C core writes its own raw lines to stderr (``chttp2_transport.cc … Got goaway``), outside
Python logging and so outside the JSON format. It reads its verbosity when grpc is imported: unless
the operator sets them, these defaults keep it quiet (its failures reach the gateway as statuses,
which the gateway logs). ``dataflow-gateway`` imports this package before anything imports grpc.
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
os.environ.setdefault("GRPC_TRACE", "")
