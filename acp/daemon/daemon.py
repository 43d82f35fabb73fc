"""The daemon's work: register, heartbeat, take launches, run them, and obey their control commands.

One connection per machine: the main thread reads the machine channel (`GET /api/v1/machines/{id}/stream`), which
carries the machine's launches and the control commands of all its sessions; it starts each launch and hands each
command to its session's command thread. Every short request (acks, heartbeats, timeline events, completions) of
every thread shares one keep-alive connection (`Api`), so the daemon holds two connections to the server.

Against a server without the channel (or with `--no-channel`) it long-polls instead, as older daemons do: the main
thread polls the machine's launches, and per running session a control thread polls its commands; every
`channel_retry` seconds it tries the channel again (a rolling deploy may have met it with an old process).

Either way a heartbeat thread reports every running session (and the device, while no channel keeps it online)
every `heartbeat_interval` seconds, and per session a watcher thread waits for the child.

The server creates the thread and the local session when it receives our "ok"; the daemon only runs
the child process and reports on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import queue
import random
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx

from acp.daemon import __version__
from acp.daemon.channel import SeenIds, ServerEvent, is_event_stream, parse_events
from acp.daemon.client import Api, Stopped, Unauthorized, Unavailable
from acp.daemon.events import EventForwarder

logger = logging.getLogger("acp.daemon")

DEFAULT_COMMAND = f"{shlex.quote(sys.executable)} -m acp.daemon.echo_agent"
CAPABILITIES = {"launch": True, "control": ["pause", "resume", "message", "cancel"]}
TERMINATE_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
EVENTS_DRAIN_TIMEOUT = 10.0  # seconds an ended session's last events may take to reach the server
SEEN_MEMORY = 600.0  # seconds a handled launch or command id is remembered (longer than any launch deadline)


def device_report() -> dict:
    """What this machine tells the server about itself (registration, pairing, heartbeats)."""
    return {
        "platform": sys.platform,
        "hostname": socket.gethostname(),
        "daemonVersion": __version__,
        "appVersion": f"python {platform.python_version()}",
        "capabilities": CAPABILITIES,
    }


class DaemonError(Exception):
    """A condition the daemon cannot run with (unknown device, refused token)."""


class Replaced(DaemonError):
    """Another daemon opened this machine's channel: this one must stop, not fight for the slot."""


class NoChannel(Exception):
    """The server has no machine channel (an older server): the daemon long-polls instead."""


@dataclass
class Config:
    url: str
    token: str
    device_id: str | None = None
    name: str = field(default_factory=socket.gethostname)
    command: str = DEFAULT_COMMAND
    wait: float = 25.0
    heartbeat_interval: float = 30.0
    min_backoff: float = 0.5
    max_backoff: float = 10.0
    events_flush_interval: float = 0.2  # an output line reaches the server within this (plus the request)
    events_buffer: int = 10_000  # events kept through an outage; beyond, the oldest go (a `gap` event says so)
    channel: bool = True  # False: the long-polls only (--no-channel)
    channel_timeout: float = 37.5  # a channel silent this long (2.5 × the server's 15 s keepalive) is dead
    channel_retry: float = 300.0  # while long-polling for want of a channel, seconds between tries of the channel


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.stopping = threading.Event()
        self.api = Api(
            config.url, config.token, self.stopping, min_backoff=config.min_backoff, max_backoff=config.max_backoff
        )
        self.device_id: str | None = config.device_id
        self.sessions: dict[str, RunningSession] = {}
        self.sessions_lock = threading.Lock()
        self._seen_launches = SeenIds(SEEN_MEMORY)
        self._seen_commands = SeenIds(SEEN_MEMORY)
        self.channel_open = threading.Event()  # set while the machine channel is connected (it keeps us online)
        self.long_polling = threading.Event()  # set while the daemon long-polls (no channel, or --no-channel)
        if not config.channel:
            self.long_polling.set()
        self._last_event_id: str | None = None
        self._deferring = False  # the main thread is in `interrupts_deferred`
        self._interrupted = threading.Event()  # a stop came while it was: raised as KeyboardInterrupt at its end

    # --- the device ---------------------------------------------------------------------------------

    def register(self) -> str:
        """Use --device, or this host's device of the same name, or register a new one. Returns its id."""
        if self.device_id is None:
            self.device_id = self._find_device() or self._create_device()
        self.heartbeat()
        logger.info("device %s (%s) is online", self.device_id, self.config.name)
        return self.device_id

    def _find_device(self) -> str | None:
        offset = 0
        while True:
            page = self._json(self.api.get("/v1/devices", params={"limit": 100, "offset": offset}), "list devices")
            for device in page["data"]:
                if device["name"] == self.config.name and device["hostname"] == socket.gethostname():
                    return device["id"]
            if not page["has_more"]:
                return None
            offset += len(page["data"])

    def _create_device(self) -> str:
        body = {"name": self.config.name, **self._device_report()}
        device = self._json(self.api.post("/v1/devices", body), "register the device", expect=201)["device"]
        logger.info("registered device %s", device["id"])
        return device["id"]

    def _device_report(self) -> dict:
        return device_report()

    def heartbeat(self) -> None:
        response = self.api.post(f"/v1/devices/{self.device_id}/heartbeat", self._device_report())
        if response.status_code == 404:
            raise DaemonError(f"Device {self.device_id} does not exist for this token.")
        self._json(response, "heartbeat")

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.config.heartbeat_interval):
            try:
                if not self.channel_open.is_set():
                    self.heartbeat()
                for session in self._running_sessions():
                    session.heartbeat()
            except (Stopped, Unauthorized):
                return
            except Exception:
                logger.exception("heartbeat failed")

    # --- launches -----------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve launches until `stop()`; raises DaemonError / Unauthorized when it cannot go on, Replaced when
        another daemon took this machine's channel."""
        self.register()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        while not self.stopping.is_set():
            if self.config.channel:
                try:
                    self._serve_channel()
                    return
                except NoChannel as exc:
                    logger.warning("the server has no machine channel (%s): long-polling instead", exc)
            self._start_polling()
            self._serve_long_polls()  # until it is time to try the channel again

    # --- the machine channel ------------------------------------------------------------------------

    def _serve_channel(self) -> None:
        """Read the machine channel until `stop()`, reconnecting (with jitter) whenever it ends or breaks."""
        backoff = self.api.backoff()
        while not self.stopping.is_set():
            try:
                self._read_channel(backoff)
            except (httpx.TransportError, httpx.StreamError) as exc:  # a silent or broken connection
                pause = backoff.next()
                logger.warning("machine channel lost (%s: %s); reconnecting in %.1fs", type(exc).__name__, exc, pause)
            else:
                pause = backoff.after_clean_end()
                logger.info("machine channel ended; reconnecting in %.1fs", pause)
            self.stopping.wait(pause)

    def _read_channel(self, backoff) -> None:
        headers = {"Accept": "text/event-stream"}
        if self._last_event_id:
            headers["Last-Event-ID"] = self._last_event_id
        response = self.api.get(
            f"/api/v1/machines/{self.device_id}/stream",
            headers=headers,
            timeout=httpx.Timeout(30.0, read=self.config.channel_timeout),
            own_connection=True,
            stream=True,
        )
        with contextlib.closing(response):
            if not is_event_stream(response):
                response.read()
                raise NoChannel(f"HTTP {response.status_code} {response.headers.get('Content-Type', '')}".strip())
            logger.info("machine channel open")
            backoff.reset()
            self.channel_open.set()
            self.long_polling.clear()  # the sessions' control threads stop polling after their current poll
            try:
                for event in parse_events(response.iter_lines()):
                    self._last_event_id = event.id or self._last_event_id
                    self._take(event)
            finally:
                self.channel_open.clear()

    def _take(self, event: ServerEvent) -> None:
        try:
            self._take_event(event)
        except (ValueError, KeyError, TypeError):  # not what the protocol says: skip it, keep the channel
            logger.exception("machine channel: could not take %s event %r", event.event, event.data[:200])

    def _take_event(self, event: ServerEvent) -> None:
        if event.event == "launch":
            launch = json.loads(event.data)
            if self._seen_launches.first_sight(launch["id"]):
                self.start_launch(launch)
        elif event.event == "command":
            self._deliver(json.loads(event.data))
        elif event.event == "replaced":
            raise Replaced(
                f"another daemon opened the channel of machine {self.device_id}: stopping (one daemon per machine)"
            )
        else:
            logger.debug("machine channel: ignored event %r", event.event)

    def _deliver(self, command: dict) -> None:
        if not self.first_sight_of_command(command["id"]):
            return
        with self.sessions_lock:
            session = self.sessions.get(command["sessionId"])
        if session is None:  # a session of this machine that this daemon does not run (another client's)
            logger.info("command %s is for session %s, not one of ours: ignored", command["id"], command["sessionId"])
            return
        session.deliver(command)

    def first_sight_of_command(self, command_id: str) -> bool:
        """False for a command already taken, by the channel or a poll (both may bring it while switching)."""
        return self._seen_commands.first_sight(command_id)

    # --- the long-polls (a server without the channel, or --no-channel) --------------------------

    def _start_polling(self) -> None:
        self.long_polling.set()
        for session in self._running_sessions():
            session.start_polling()

    def _serve_long_polls(self) -> None:
        """Long-poll the machine's launches until `stop()`, or (with the channel allowed) until it is time to try
        the channel again — after `channel_retry` seconds, give or take half, so daemons do not try together."""
        path = f"/api/v1/machines/{self.device_id}/launches"
        try_channel_at = time.monotonic() + self.config.channel_retry * random.uniform(0.5, 1.5)
        while not self.stopping.is_set():
            if self.config.channel and time.monotonic() >= try_channel_at:
                return
            response = self.api.get(
                path, params={"wait": self.config.wait}, timeout=self.config.wait + 30, own_connection=True
            )
            if response.status_code == 404:
                raise DaemonError(f"Device {self.device_id} is gone (or not this token's).")
            if response.status_code != 200:
                logger.warning("fetching launches: HTTP %s %s", response.status_code, response.text[:200])
                self.stopping.wait(self.config.max_backoff)
                continue
            for launch in response.json()["data"]:
                if self._seen_launches.first_sight(launch["id"]):
                    self.start_launch(launch)

    def start_launch(self, launch: dict) -> None:
        """Start the command for `launch`, then acknowledge it: "ok" with the pid, or "error" if it did not start.

        A stop (SIGTERM/SIGINT, a KeyboardInterrupt raised wherever the main thread is) waits until the child is a
        registered session or ended (`interrupts_deferred`); meanwhile the acknowledgement in flight is answered
        but not retried. So no child outlives the daemon, and every session the server was told of is one `stop()`
        reports cancelled.
        """
        process = None
        try:
            with self.interrupts_deferred():
                process = self._spawn(launch)
                if process is None:
                    return
                session = self._acknowledge(launch, process)
                process = None  # registered as `session` (which `stop()` ends), or ended (the server refused it)
        except BaseException:
            if process is not None:
                with self.interrupts_deferred():
                    _terminate(process)
            raise
        if session is not None:
            session.start()

    def _spawn(self, launch: dict) -> subprocess.Popen | None:
        """The child process; None when it could not start (reported to the server as an "error")."""
        try:
            return subprocess.Popen(
                shlex.split(self.config.command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # forwarded to the thread's timeline (and echoed to our own)
                stderr=subprocess.PIPE,
                env={**os.environ, **_launch_environment(launch)},
                start_new_session=True,  # its own process group: pause/resume/cancel reach its children too
            )
        except (OSError, ValueError) as exc:
            logger.error("launch %s: could not start %r: %s", launch["id"], self.config.command, exc)
            payload = {"code": "spawn_failed", "message": str(exc)}
            self.api.post(self._ack_path(launch), {"status": "error", "payload": payload}, cancel=self._interrupted)
            return None

    def _acknowledge(self, launch: dict, process: subprocess.Popen) -> RunningSession | None:
        """Send "ok" with the child's pid; on the server's answer register the session it created. None (the child
        ended) when the server refused the "ok"."""
        body = {"status": "ok", "payload": {"pid": process.pid}}
        response = self.api.post(self._ack_path(launch), body, cancel=self._interrupted)
        if response.status_code != 200:
            # Typically 409: the launch timed out before our "ok" arrived; nobody expects this session.
            logger.warning(
                "launch %s: ack refused (HTTP %s); stopping pid %s", launch["id"], response.status_code, process.pid
            )
            _terminate(process)
            return None
        acked = response.json()
        session = RunningSession(self, launch["id"], acked["thread_id"], acked["local_session_id"], process)
        with self.sessions_lock:
            self.sessions[session.session_id] = session
        logger.info("launch %s: session %s running, pid %s", launch["id"], session.session_id, process.pid)
        return session

    def _ack_path(self, launch: dict) -> str:
        return f"/api/v1/machines/{self.device_id}/launches/{launch['id']}/ack"

    def _running_sessions(self) -> list[RunningSession]:
        with self.sessions_lock:
            return list(self.sessions.values())

    def forget(self, session: RunningSession) -> None:
        with self.sessions_lock:
            self.sessions.pop(session.session_id, None)

    # --- stopping -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def interrupts_deferred(self):
        """A stop asked for meanwhile (`defer_interrupt`) is raised as KeyboardInterrupt when the block ends."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            if self._interrupted.is_set():
                raise KeyboardInterrupt

    def defer_interrupt(self) -> bool:
        """From the SIGTERM/SIGINT handler (in the main thread): True when the main thread is in a block that must
        not be cut short (`interrupts_deferred`), which raises the KeyboardInterrupt itself when it ends; requests
        given `cancel=self._interrupted` give up instead of retrying meanwhile."""
        if self._deferring:
            self._interrupted.set()
        return self._deferring

    def stop(self) -> None:
        """Stop taking work; end every child and report its session cancelled."""
        sessions = self._running_sessions()
        for session in sessions:
            session.shut_down()
        self.stopping.set()

    @staticmethod
    def _json(response, what: str, expect: int = 200) -> dict:
        if response.status_code != expect:
            raise DaemonError(f"Could not {what}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()


class RunningSession:
    """A launched child process and its local session: obeys its control commands, reports how it ends."""

    def __init__(self, daemon: Daemon, launch_id: str, thread_id: str, session_id: str, process: subprocess.Popen):
        self.daemon = daemon
        self.api = daemon.api
        self.launch_id = launch_id
        self.thread_id = thread_id
        self.session_id = session_id
        self.process = process
        self.path = f"/v1/threads/{thread_id}/local-sessions/{session_id}"
        self.ended = threading.Event()
        self._ending = threading.Lock()
        self._ended_by_us = False
        self.commands: queue.Queue[dict] = queue.Queue()  # from the machine channel, in the order they came
        self._threads_lock = threading.Lock()
        self._command_thread: threading.Thread | None = None  # started at the channel's first command
        self._control_thread: threading.Thread | None = None  # started when the daemon long-polls
        config = daemon.config
        self.events = EventForwarder(
            self.api,
            thread_id,
            session_id,
            flush_interval=config.events_flush_interval,
            max_buffered=config.events_buffer,
            min_backoff=config.min_backoff,
            max_backoff=config.max_backoff,
        )
        self._readers = [
            threading.Thread(
                target=self._forward, args=(name, pipe, echo), name=f"{name}-{session_id[:8]}", daemon=True
            )
            for name, pipe, echo in (("stdout", process.stdout, sys.stdout), ("stderr", process.stderr, sys.stderr))
            if pipe is not None
        ]

    def start(self) -> None:
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._watch, name=f"watch-{self.session_id[:8]}", daemon=True).start()
        if self.daemon.long_polling.is_set():
            self.start_polling()

    def start_polling(self) -> None:
        """Long-poll this session's commands (from now on, whenever the daemon long-polls)."""
        with self._threads_lock:
            if self._control_thread is None:
                self._control_thread = self._thread(self._control_loop, "control")

    def deliver(self, command: dict) -> None:
        """A command from the machine channel: carried out by this session's command thread, after those before it."""
        self.commands.put(command)
        with self._threads_lock:
            if self._command_thread is None:
                self._command_thread = self._thread(self._command_loop, "commands")

    def _thread(self, target, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"{name}-{self.session_id[:8]}", daemon=True)
        thread.start()
        return thread

    def heartbeat(self) -> None:
        if not self.ended.is_set():
            self.api.post(f"{self.path}/heartbeat", {})

    # --- the child's output and its end -----------------------------------------------------------

    def _forward(self, stream: str, pipe, echo) -> None:
        """Each line the agent writes: to the timeline as an `output` event, and to our own stream."""
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            print(line, file=echo, flush=True)
            self.events.output(stream, line)

    def _watch(self) -> None:
        code = self.process.wait()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):  # a pipe whose reader is gone
                self.process.stdin.close()
        for reader in self._readers:
            reader.join(TERMINATE_GRACE)  # its last lines before the exit event (a grandchild may hold the pipe)
        self.events.add("exit", {"code": code, "pid": self.process.pid})
        with self._ending:
            if self._ended_by_us:
                self.events.close(EVENTS_DRAIN_TIMEOUT)
                return
            self.ended.set()
        self.events.close(EVENTS_DRAIN_TIMEOUT)  # the agent's last words reach the timeline before its end
        status = "completed" if code == 0 else "failed"
        logger.info("session %s: the agent exited with %s: %s", self.session_id, code, status)
        with contextlib.suppress(Stopped, Unauthorized):
            self._complete(status, None if code == 0 else f"The agent exited with code {code}.")
        self.daemon.forget(self)

    def _complete(self, status: str, error: str | None = None, *, retry: bool = True) -> None:
        body = {"status": status, **({"error": error} if error else {})}
        response = self.api.post(f"{self.path}/complete", body, retry=retry)
        if response.status_code != 200:
            logger.warning(
                "session %s: complete(%s): HTTP %s %s",
                self.session_id,
                status,
                response.status_code,
                response.text[:200],
            )

    # --- control commands ---------------------------------------------------------------------------

    def _command_loop(self) -> None:
        """Carry out the commands the machine channel brings, one after another (the channel reader never waits)."""
        try:
            while not self.ended.is_set():
                try:
                    command = self.commands.get(timeout=1.0)
                except queue.Empty:
                    continue
                if not self.ended.is_set():
                    self.handle(command)
        except (Stopped, Unauthorized):
            return
        except Exception:
            logger.exception("session %s: command loop failed", self.session_id)

    def _control_loop(self) -> None:
        wait = self.daemon.config.wait
        try:
            while not self.ended.is_set():
                if not self.daemon.long_polling.wait(1.0):  # the channel brings the commands meanwhile
                    continue
                response = self.api.get(
                    f"{self.path}/control/poll",
                    params={"wait": wait, "limit": 10},
                    timeout=wait + 30,
                    own_connection=True,
                )
                if self.ended.is_set():
                    return
                if response.status_code != 200:
                    logger.warning("session %s: control poll: HTTP %s", self.session_id, response.status_code)
                    if response.status_code == 404:
                        return  # the session is gone on the server
                    self.daemon.stopping.wait(self.daemon.config.max_backoff)
                    continue
                for command in response.json()["data"]:
                    if self.daemon.first_sight_of_command(command["id"]):
                        self.handle(command)
        except (Stopped, Unauthorized):
            return
        except Exception:
            logger.exception("session %s: control loop failed", self.session_id)

    def handle(self, command: dict) -> None:
        """Acknowledge `command`, carry it out, and acknowledge it completed with what happened."""
        kind, command_id = command["commandType"], command["id"]
        ack_path = f"{self.path}/control/{command_id}/ack"
        action = getattr(self, f"_do_{kind}", None)
        if action is None:
            logger.warning("session %s: unknown command type %r", self.session_id, kind)
            self.api.post(ack_path, {"status": "cancelled", "payload": {"error": f"unknown command type {kind!r}"}})
            return
        self.api.post(ack_path, {"status": "acknowledged"})
        try:
            result = action(command.get("payload") or {})
        except OSError as exc:  # the child is gone, or its stdin is closed
            logger.warning("session %s: %s %s failed: %s", self.session_id, kind, command_id, exc)
            self.api.post(ack_path, {"status": "cancelled", "payload": {"error": str(exc)}})
            return
        response = self.api.post(ack_path, {"status": "completed", "payload": result})
        logger.info("session %s: %s %s completed (HTTP %s)", self.session_id, kind, command_id, response.status_code)
        if kind == "cancel":
            self._complete("cancelled")
            self.daemon.forget(self)

    def _signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def _do_pause(self, payload: dict) -> dict:
        self._signal(signal.SIGSTOP)
        return {"paused": True, "pid": self.process.pid}

    def _do_resume(self, payload: dict) -> dict:
        self._signal(signal.SIGCONT)
        return {"paused": False, "pid": self.process.pid}

    def _do_message(self, payload: dict) -> dict:
        text = str(payload.get("text", ""))
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()
        return {"delivered": True, "bytes": len(text.encode())}

    def _do_cancel(self, payload: dict) -> dict:
        with self._ending:
            self._ended_by_us = True
            self.ended.set()
        code = _terminate(self.process)
        return {"cancelled": True, "exit_code": code}

    def shut_down(self) -> None:
        """The daemon is stopping: end the child and report the session cancelled."""
        with self._ending:
            if self.ended.is_set():
                return
            self._ended_by_us = True
            self.ended.set()
        _terminate(self.process)
        try:  # one attempt: a daemon asked to stop must not wait for a server that is down
            self._complete("cancelled", "The daemon stopped.", retry=False)
        except (Stopped, Unauthorized, Unavailable) as exc:
            logger.warning("session %s: could not report it cancelled: %s", self.session_id, exc)
        self.events.close(TERMINATE_GRACE)


def _launch_environment(launch: dict) -> dict[str, str]:
    """What the child learns of its launch, as ACP_* environment variables."""
    values = {
        "ACP_LAUNCH_ID": launch["id"],
        "ACP_WORKSPACE_ID": launch.get("workspace_id"),
        "ACP_MACHINE_ID": launch.get("machine_id"),
        "ACP_INITIAL_PROMPT": launch.get("initial_prompt"),
        "ACP_WORKTREE_NAME": launch.get("worktree_name"),
        "ACP_RESUME_SESSION_ID": launch.get("resume_session_id"),
        "ACP_AGENT_SESSION_ID": launch.get("agent_session_id"),
        "ACP_SESSION_SETTINGS": json.dumps(launch.get("session_settings") or {}),
        "ACP_LAUNCH_METADATA": json.dumps(launch.get("metadata") or {}),
    }
    return {name: str(value) for name, value in values.items() if value is not None}


def _terminate(process: subprocess.Popen) -> int | None:
    """End the child's whole process group: SIGTERM (and SIGCONT, in case it is paused), then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGCONT):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
    try:
        return process.wait(TERMINATE_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()
