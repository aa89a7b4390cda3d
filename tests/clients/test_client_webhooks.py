"""``verify_webhook`` accepts exactly what ``standardwebhooks`` itself signs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from unlearnd_client import WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(b"a secret of thirty-two bytes....").decode()
PAYLOAD = {"event": "deletion_request.status_changed", "request_id": "r1", "status": "completed"}


def signed(body: bytes, secret: str = SECRET, at: datetime | None = None) -> dict[str, str]:
    when = at or datetime.now(UTC)
    return {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(int(when.timestamp())),
        "Webhook-Signature": Webhook(secret).sign("msg_1", when, body),
    }


def test_a_signed_delivery_verifies_and_answers_its_payload():
    body = json.dumps(PAYLOAD).encode()
    assert verify_webhook(SECRET, body, signed(body)) == PAYLOAD
    assert verify_webhook(SECRET, body.decode(), signed(body)) == PAYLOAD


def test_a_second_signature_of_a_rotated_secret_is_enough():
    body = json.dumps(PAYLOAD).encode()
    old = "whsec_" + base64.b64encode(b"the old secret, thirty-two bytes").decode()
    headers = signed(body)
    headers["Webhook-Signature"] = (
        signed(body, old)["Webhook-Signature"] + " " + headers["Webhook-Signature"]
    )
    assert verify_webhook(SECRET, body, headers) == PAYLOAD


@pytest.mark.parametrize("tamper", ["body", "secret", "stale", "no-signature", "id"])
def test_anything_changed_is_refused(tamper):
    body = json.dumps(PAYLOAD).encode()
    headers = signed(body)
    secret = SECRET
    if tamper == "body":
        body = body.replace(b"completed", b"failed")
    elif tamper == "secret":
        secret = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()
    elif tamper == "stale":
        headers = signed(body, at=datetime.now(UTC) - timedelta(minutes=10))
    elif tamper == "no-signature":
        del headers["Webhook-Signature"]
    elif tamper == "id":
        headers["Webhook-Id"] = "msg_2"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, body, headers)
