"""Bad input at the edges, against a live uvicorn process: each is refused with a 4xx (or the connection closed
by the server's own limits), with no traceback in the server's log and no growth of its memory past the limit."""

import json
import select
import socket
import time
from pathlib import Path

import pytest
from django.utils import timezone

from acp.models import ApiToken, Device, Project
from tests.conftest import make_token, make_user
from tests.sessions.live import wait_for_waiters

pytestmark = pytest.mark.django_db(transaction=True)

BODY_READ_TIMEOUT = 1.5
MEMORY_SLACK_KB = 20 * 1024  # allocator noise: well under the 100 MB body, and ten times the 2 MB body limit


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def server(processes):
    return processes.start_server("acp-edge-limits", ACP_BODY_READ_TIMEOUT=BODY_READ_TIMEOUT)


@pytest.fixture
def token(db):
    return make_token(make_user())


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def head(path, token, *extra, method="POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {token}",
             "Content-Type: application/json", *extra]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock) -> tuple[int, bytes]:
    """The status and the rest of what the server sent, until it closed the connection or went quiet."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and _complete(data):
                break
    except (ConnectionResetError, TimeoutError):
        pass
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split()[1]), data


def _complete(data: bytes) -> bool:
    headers, _, body = data.partition(b"\r\n\r\n")
    for line in headers.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def assert_clean(server, before_kb):
    growth = rss_kb(server.popen.pid) - before_kb
    assert growth < MEMORY_SLACK_KB, f"the server grew by {growth} KB"
    assert server.alive()
    assert "Traceback" not in server.log(), server.log()


def test_a_body_that_never_finishes_arriving_is_answered_408(server, token):
    before = rss_kb(server.popen.pid)
    with connect(server) as sock:
        sock.sendall(head("/v1/projects", token, "Content-Length: 1000") + b'{"name": "')
        started = time.monotonic()
        status, data = read_response(sock)
        waited = time.monotonic() - started
    assert status == 408 and json.loads(data.partition(b"\r\n\r\n")[2])["code"] == "request_timeout"
    assert BODY_READ_TIMEOUT - 0.1 <= waited < BODY_READ_TIMEOUT + 5
    assert_clean(server, before)


def refused_for_its_head(status: int, data: bytes) -> bool:
    answer = json.loads(data.partition(b"\r\n\r\n")[2])
    return status == 431 and answer["code"] == "request_header_fields_too_large" and answer["details"]["limit"] == 16384


def test_a_header_block_over_the_limit_is_refused(server, token):
    before = rss_kb(server.popen.pid)
    request = head("/v1/projects", token, f"X-Padding: {'a' * 100_000}", method="GET")
    with connect(server) as sock:  # arriving whole: refused by the application's guard
        sock.sendall(request)
        assert refused_for_its_head(*read_response(sock))
    with connect(server) as sock:  # still arriving: refused by the server's parser before it is complete
        for start in range(0, 20_000, 4_000):
            sock.sendall(request[start : start + 4_000])
        assert refused_for_its_head(*read_response(sock))
    assert_clean(server, before)


def test_a_head_still_arriving_is_refused_by_the_production_worker_too(processes, token):
    server = processes.start_server("acp-edge-limits-gunicorn", gunicorn=True)
    with connect(server) as sock:
        sock.sendall(head("/v1/projects", token, f"X-Padding: {'a' * 100_000}", method="GET")[:20_000])
        assert refused_for_its_head(*read_response(sock))


def test_the_head_limit_counts_each_request_of_a_connection_afresh(server, token):
    """Requests one after the other on a kept-alive connection, and three sent at once (pipelined), each with a
    6 KB header: together past the limit, each under it."""
    request = head("/v1/projects", token, f"X-Padding: {'a' * 6_000}", method="GET")
    with connect(server) as sock:
        for _ in range(4):
            sock.sendall(request)
            status, _ = read_response(sock)
            assert status == 200
        sock.sendall(request * 3)
        answers = b""
        while answers.count(b"HTTP/1.1 200 ") < 3:
            chunk = sock.recv(65536)
            assert chunk, answers[-500:]
            answers += chunk
    assert b"HTTP/1.1 431" not in answers


def test_large_bodies_fed_in_slices_arrive_whole_and_the_connection_goes_on(server, token):
    """The parser is fed 4 KB at a time (acp/serving/http.py): a 200 KB body sent at once, plain and chunked, reaches
    the view whole, and the next request on the connection is read as before."""
    body = b'{"name": "sliced"}' + b" " * 200_000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:70_001], body[70_001:])) + b"0\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(head("/v1/projects", token, f"Content-Length: {len(body)}") + body)
        status, data = read_response(sock)
        assert status == 201, data.partition(b"\r\n\r\n")[2][:300]
        sock.sendall(head("/v1/projects", token, "Transfer-Encoding: chunked") + chunked)
        status, data = read_response(sock)
        assert status == 201, data.partition(b"\r\n\r\n")[2][:300]
        sock.sendall(head("/v1/projects", token, method="GET"))
        status, data = read_response(sock)
    assert status == 200 and data.count(b'"sliced"') == 2


def test_trailers_still_arriving_past_the_limit_are_refused(server, token):
    """A chunked body's trailers are header fields too: they are counted as a head's are."""
    before = rss_kb(server.popen.pid)
    with connect(server) as sock:
        sock.sendall(head("/v1/projects", token, "Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\nX-Trailer: ")
        for _ in range(8):  # past the limit even if the first pieces are read with the head (off by 4 KB at most)
            sock.sendall(b"a" * 4_000)
            if select.select([sock], [], [], 0.2)[0]:
                break  # answered: what is sent after could reset the connection before the answer is read
        assert refused_for_its_head(*read_response(sock))
    assert_clean(server, before)


def test_a_head_over_the_limit_behind_a_waiting_request_is_answered_after_it(server, token):
    """Pipelined behind a long-poll: the long-poll's answer first, then the refusal, in order."""
    user = ApiToken.objects.get(key_prefix=token[:12]).user
    machine = Device.objects.create(user=user, name="edge", last_seen_at=timezone.now())
    poll = head(f"/api/v1/machines/{machine.pk}/launches?wait=2", token, method="GET")
    oversized = head("/v1/projects", token, f"X-Padding: {'a' * 100_000}", method="GET")
    with connect(server) as sock:
        sock.sendall(poll)
        wait_for_waiters(server.url, 1)
        for start in range(0, 20_000, 4_000):
            sock.sendall(oversized[start : start + 4_000])
        answers = b""
        while chunk := sock.recv(65536):
            answers += chunk
    first, _, second = answers.partition(b"HTTP/1.1 431")
    assert first.startswith(b"HTTP/1.1 200") and b'"data"' in first
    assert refused_for_its_head(431, second)


def test_a_request_asking_for_an_upgrade_with_a_body_is_refused_and_changes_nothing(server, token):
    """httptools would skip its body (the view would see none); no upgrade is served here."""
    body = b'{"name": "x"}'
    extra = ("Connection: Upgrade", "Upgrade: h2c", f"Content-Length: {len(body)}")
    before = Project.objects.count()
    with connect(server) as sock:
        sock.sendall(head("/v1/projects", token, *extra) + body)
        status, data = read_response(sock)
    assert status == 400 and json.loads(data.partition(b"\r\n\r\n")[2])["code"] == "invalid_request"
    assert Project.objects.count() == before


def test_a_json_body_nested_ten_thousand_levels_is_a_400(server, token):
    before = rss_kb(server.popen.pid)
    for body in ("[" * 10_000 + "]" * 10_000, '{"name": ' * 10_000 + '"x"' + "}" * 10_000):
        with connect(server) as sock:
            payload = body.encode()
            sock.sendall(head("/v1/projects", token, f"Content-Length: {len(payload)}") + payload)
            status, data = read_response(sock)
        assert status == 400, data[:500]
        assert json.loads(data.partition(b"\r\n\r\n")[2])["code"] == "invalid_request"
    assert_clean(server, before)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_100_mb_body_is_refused_without_being_read(server, token, framing):
    before = rss_kb(server.popen.pid)
    size, block = 100 * 1024 * 1024, b"x" * (1024 * 1024)
    with connect(server) as sock:
        framing_header = f"Content-Length: {size}" if framing == "content-length" else "Transfer-Encoding: chunked"
        sock.sendall(head("/v1/projects", token, framing_header))
        sent = 0
        try:  # until the server answers (it does once it has seen enough) and closes
            while sent < size and not select.select([sock], [], [], 0)[0]:
                sock.sendall(block if framing == "content-length" else b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, data = read_response(sock)
    assert sent < size, "the server read the whole 100 MB body"
    assert status == 413 and b"payload_too_large" in data
    assert_clean(server, before)
