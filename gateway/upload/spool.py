"""What all uploads of the process may hold of Audio parts sent before their Parameters.

An Audio part that comes first waits (in memory, then in a temporary file) until the Parameters
arrive: each upload is bounded by GATEWAY_MAX_UPLOAD_BYTES alone, so a few clients sending Audio first
and Parameters never filled the disk (the file is unlinked at once: ``du`` does not see it) or, with
/tmp a tmpfs, the host's memory. :class:`SpoolBudget` bounds them together.
"""

from __future__ import annotations


class SpoolBudget:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.bytes = 0  # held by all uploads together; never above limit_bytes

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes held; False (nothing counted) when they would pass the limit."""
        if self.bytes + size > self.limit_bytes:
            return False
        self.bytes += size
        return True

    def give(self, size: int) -> None:
        """``size`` bytes an upload held are let go (read back, or the upload ended)."""
        self.bytes -= size
