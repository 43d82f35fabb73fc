"""`python -m acp.daemon` (`acp-daemon`): run the reference daemon until SIGINT/SIGTERM; `… pair` pairs this machine."""

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path

from acp.daemon import __version__
from acp.daemon.client import Stopped, Unauthorized
from acp.daemon.daemon import DEFAULT_COMMAND, Config, Daemon, DaemonError, Replaced
from acp.daemon.pairing import PairingError, default_config_path, pair, stored_credentials

logger = logging.getLogger("acp.daemon")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="acp-daemon",
        description="Run launched coding sessions on this machine and obey their control commands. "
        "First pair this machine: acp-daemon pair --url URL --code PAIRING_TOKEN.",
    )
    parser.add_argument("--url", required=True, help="The ACP server, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--token",
        help="A user token, or a device token (with --device). Default: the key `acp-daemon pair` stored for --url.",
    )
    add_config_argument(parser)
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
    parser.add_argument(
        "--no-channel",
        dest="channel",
        action="store_false",
        help="Do not use the machine channel (one connection for all the machine's work): long-poll the launches "
        "and each session's commands, as against a server that has no channel (the daemon falls back by itself).",
    )
    parser.add_argument(
        "--channel-timeout",
        type=float,
        default=37.5,
        help="Seconds of silence after which the channel is taken for dead and reopened (default 37.5: 2.5 × the "
        "server's 15 s keepalive).",
    )
    parser.add_argument(
        "--channel-retry",
        type=float,
        default=300.0,
        help="While long-polling because the server had no channel, seconds between tries of the channel "
        "(default 300, give or take half).",
    )
    parser.add_argument("--wait", type=float, default=25.0, help="Long-poll seconds (at most 30; default 25).")
    parser.add_argument("--heartbeat-interval", type=float, default=30.0, help="Seconds between heartbeats.")
    parser.add_argument("--max-backoff", type=float, default=10.0, help="Longest pause between reconnects, seconds.")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--version", action="version", version=f"acp-daemon {__version__}")
    return parser.parse_args(argv)


def add_config_argument(parser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="The file holding paired keys (default: $ACP_DAEMON_CONFIG, else ~/.config/acp/daemon.json).",
    )


def parse_pair_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="acp-daemon pair",
        description="Pair this machine: trade a pairing token (POST /v1/local-runner-pairing-tokens) for this "
        "device's own key, stored in a file only you can read.",
    )
    parser.add_argument("--url", required=True, help="The ACP server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--code", required=True, help="The pairing token (acpp_…).")
    parser.add_argument("--name", default=socket.gethostname(), help="The device's name (default: the host name).")
    add_config_argument(parser)
    return parser.parse_args(argv)


def pair_main(argv) -> int:
    args = parse_pair_args(argv)
    config_path = args.config or default_config_path()
    try:
        entry = pair(url=args.url, code=args.code, name=args.name, config_path=config_path)
    except PairingError as exc:
        print(f"acp-daemon pair: {exc}", file=sys.stderr)
        return 2
    print(f"Paired this machine as device {entry['deviceName']!r} ({entry['deviceId']}) on {args.url}.")
    print(f"Its key {entry['apiKeyPrefix']}… is stored in {config_path} (readable only by you).")
    print(f"Start the daemon with: acp-daemon --url {args.url}")
    return 0


def credentials(args) -> tuple[str, str | None]:
    """(token, device id): --token (and --device) as given, else what `pair` stored for --url."""
    if args.token:
        return args.token, args.device
    config_path = args.config or default_config_path()
    stored = stored_credentials(config_path, args.url)
    if stored is None:
        raise DaemonError(
            f"No key for {args.url} in {config_path}: pair this machine first "
            f"(acp-daemon pair --url {args.url} --code PAIRING_TOKEN) or pass --token."
        )
    return stored["apiKey"], args.device or stored["deviceId"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pair"]:
        return pair_main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(threadName)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))  # one line per request
    try:
        token, device_id = credentials(args)
    except DaemonError as exc:
        logger.error("%s", exc)
        return 2
    config = Config(
        url=args.url,
        token=token,
        device_id=device_id,
        command=args.command,
        wait=args.wait,
        heartbeat_interval=args.heartbeat_interval,
        max_backoff=args.max_backoff,
        channel=args.channel,
        channel_timeout=args.channel_timeout,
        channel_retry=args.channel_retry,
    )
    if args.name:
        config.name = args.name
    daemon = Daemon(config)

    def interrupt(signum, frame):
        if not daemon.defer_interrupt():
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
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
    except Replaced as exc:
        logger.error("replaced: %s", exc)
        daemon.stop()
        return 3
    except DaemonError as exc:
        logger.error("%s", exc)
        daemon.stop()
        return 2
    except Stopped:
        return 0
    return 0
