"""Suite-wide test setup: asyncio debug mode, shared fixtures live in tests/fixtures.py."""

from __future__ import annotations

import os

# asyncio debug mode catches never-awaited coroutines and slow callbacks; set before any loop exists.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")
