"""One pairing token exchanged by 20 threads at once (each with its own PostgreSQL connection): one device, one
key, the rest refused, no 5xx."""

from collections import Counter

import pytest

from acp.models import ApiToken, Device, PairingToken
from acp.services import pairing_token_create
from tests.bindings.test_concurrency import run_together
from tests.conftest import make_client

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 20
DEVICE = {"name": "laptop", "hostname": "box", "platform": "linux"}


def test_concurrent_exchanges_of_one_token_pair_exactly_once(user):
    raw = pairing_token_create(user=user).raw

    def exchange(index):
        response = make_client().post(
            "/v1/local-runner-pairing-tokens/exchange", {"token": raw, "device": DEVICE}, format="json"
        )
        return response.status_code, response.json()

    results = run_together(THREADS, exchange)
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 1, 409: THREADS - 1}, results
    winner = next(body for status, body in results if status == 200)
    assert str(Device.objects.get().pk) == winner["device"]["id"]
    key = ApiToken.objects.get(kind="device")
    assert key.device_id == key.pairing_token.device_id and key.key_prefix == winner["apiKeyPrefix"]
    assert PairingToken.objects.get().status == "completed"
    assert all(body["code"] == "conflict" for status, body in results if status == 409)
