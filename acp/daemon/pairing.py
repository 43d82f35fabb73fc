"""`acp-daemon pair`: trade a pairing token for this machine's device key, kept in a file only its owner reads.

The file (default `$XDG_CONFIG_HOME/acp/daemon.json`, i.e. `~/.config/acp/daemon.json`; `--config` or
`ACP_DAEMON_CONFIG` override it) holds one entry per server URL, so a key is only ever sent to the server that
issued it: `{"servers": {URL: {"apiKey", "apiKeyPrefix", "deviceId", "deviceName", "pairedAt"}}}`.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx

from acp.daemon import __version__
from acp.daemon.daemon import device_report


class PairingError(Exception):
    """The server refused the pairing token, or could not be reached."""


def default_config_path() -> Path:
    explicit = os.environ.get("ACP_DAEMON_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "acp" / "daemon.json"


def server_key(url: str) -> str:
    return url.rstrip("/")


def load_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"servers": {}}


def stored_credentials(path: Path, url: str) -> dict | None:
    """The stored entry for `url` ({"apiKey", "deviceId", …}), or None."""
    return load_config(path).get("servers", {}).get(server_key(url))


def save_config(path: Path, config: dict) -> None:
    """Write `config` atomically, readable by its owner only (0600, in a 0700 directory if we create it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".daemon-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(config, file, indent=2)
            file.write("\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def pair(*, url: str, code: str, name: str, config_path: Path, timeout: float = 30.0) -> dict:
    """Exchange `code` at `url` for this machine's device and key; store them. Returns the stored entry."""
    body = {"token": code, "device": {"name": name, **device_report()}}
    try:
        response = httpx.post(
            f"{server_key(url)}/v1/local-runner-pairing-tokens/exchange",
            json=body,
            headers={"User-Agent": f"acp-daemon/{__version__}"},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise PairingError(f"cannot reach {url}: {exc}") from exc
    if response.status_code != 200:
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text
        raise PairingError(f"the server refused the pairing token (HTTP {response.status_code}): {message}")
    answer = response.json()
    entry = {
        "apiKey": answer["apiKey"],
        "apiKeyPrefix": answer["apiKeyPrefix"],
        "deviceId": answer["device"]["id"],
        "deviceName": answer["device"]["name"],
        "pairedAt": datetime.now(UTC).isoformat(),
    }
    config = load_config(config_path)
    config.setdefault("servers", {})[server_key(url)] = entry
    save_config(config_path, config)
    return entry
