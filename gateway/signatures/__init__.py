"""Signed requests from platforms that sign them (AudioHook's HTTP message signatures): verification
and the replay memory it needs. Knows settings and errors; nothing of sockets or sessions."""
