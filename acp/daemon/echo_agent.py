"""A harmless stand-in for a coding agent: echoes its initial prompt and every message, then idles.

The daemon starts it with the launch in environment variables (ACP_INITIAL_PROMPT, ACP_LAUNCH_ID, …) and
writes each `message` command's text to its stdin, one line each. It exits 0 on SIGTERM.
"""

import os
import signal
import sys
import threading


def main() -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    launch_id = os.environ.get("ACP_LAUNCH_ID", "?")
    print(f"echo-agent[{launch_id}]: started (pid {os.getpid()})", flush=True)
    print(f"echo-agent[{launch_id}]: prompt: {os.environ.get('ACP_INITIAL_PROMPT', '')}", flush=True)
    threading.Thread(target=_echo_stdin, args=(launch_id,), daemon=True).start()
    while not stop.wait(0.5):
        pass
    print(f"echo-agent[{launch_id}]: terminated", flush=True)
    return 0


def _echo_stdin(launch_id: str) -> None:
    for line in sys.stdin:
        print(f"echo-agent[{launch_id}]: message: {line.rstrip(chr(10))}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
