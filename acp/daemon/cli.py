"""`python -m acp.daemon`: run the reference daemon until SIGINT/SIGTERM."""

import argparse
import logging
import signal
import sys

from acp.daemon import __version__
from acp.daemon.client import Stopped, Unauthorized
from acp.daemon.daemon import DEFAULT_COMMAND, Config, Daemon, DaemonError

logger = logging.getLogger("acp.daemon")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m acp.daemon",
        description="Run launched coding sessions on this machine and obey their control commands.",
    )
    parser.add_argument("--url", required=True, help="The ACP server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", required=True, help="A user token, or this device's device token (with --device).")
    parser.add_argument(
        "--device", help="This machine's device id. Without it: reuse this host's device named --name, or register one."
    )
    parser.add_argument("--name", help="The device's name when registering or finding it (default: the host name).")
    parser.add_argument(
        "--command",
        default=DEFAULT_COMMAND,
        help="The command run for each launch (split like a shell would; the launch is in ACP_* environment "
        "variables). Default: the built-in echo agent.",
    )
    parser.add_argument("--wait", type=float, default=25.0, help="Long-poll seconds (at most 30; default 25).")
    parser.add_argument("--heartbeat-interval", type=float, default=30.0, help="Seconds between heartbeats.")
    parser.add_argument("--max-backoff", type=float, default=10.0, help="Longest pause between reconnects, seconds.")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--version", action="version", version=f"acp-daemon {__version__}")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(threadName)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))  # one line per request
    config = Config(
        url=args.url,
        token=args.token,
        device_id=args.device,
        command=args.command,
        wait=args.wait,
        heartbeat_interval=args.heartbeat_interval,
        max_backoff=args.max_backoff,
    )
    if args.name:
        config.name = args.name
    daemon = Daemon(config)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        daemon.run()
    except KeyboardInterrupt:
        logger.info("stopping: ending %d running session(s)", len(daemon.sessions))
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        daemon.stop()
        return 0
    except Unauthorized:
        logger.error("the server refused the token (401)")
        daemon.stop()
        return 2
    except DaemonError as exc:
        logger.error("%s", exc)
        daemon.stop()
        return 2
    except Stopped:
        return 0
    return 0
