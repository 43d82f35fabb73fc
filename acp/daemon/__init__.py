"""The reference ACP daemon: runs launched coding sessions on this machine and obeys their control commands.

    python -m acp.daemon --url http://127.0.0.1:8000 --token acp_… [--device ID] [--command "…"]

It needs nothing of Django: only httpx and the standard library, so it runs on any machine with Python.
"""

__version__ = "0.1.0"
