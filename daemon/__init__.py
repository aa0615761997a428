"""The long-lived Tether process: CLI, config, paths, WebSocket server, sessions,
state store, secrets, pairing, logging, and the composition root (``daemon.app``).
"""

__version__ = "0.1.0"
