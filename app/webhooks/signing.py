"""Signatures on every delivery, in two schemes a receiver may check either of.

* `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret_key, raw body)>`, keyed with the
  secret's UTF-8 bytes exactly as the subscriber sent it;
* Standard Webhooks (https://www.standardwebhooks.com): `webhook-signature: v1,<base64
  HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`. A `whsec_<base64>` secret is
  base64-decoded to get the key, as that spec's libraries do; any other secret is used as its
  UTF-8 bytes (give the receiving library those bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

STANDARD_SECRET_PREFIX = "whsec_"


def decode_standard_secret(secret: str) -> bytes | None:
    """The key bytes of a `whsec_<base64>` secret; None if the rest is not (non-empty) base64."""
    encoded = secret[len(STANDARD_SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def standard_key(secret: str) -> bytes:
    if secret.startswith(STANDARD_SECRET_PREFIX):
        key = decode_standard_secret(secret)
        if key is not None:
            return key
    return secret.encode()


def signature_headers(secret: str, body: bytes, message_id: str, timestamp: int) -> dict[str, str]:
    """The signature headers of both schemes for one attempt (the timestamp is the send time)."""
    body_mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    signed = f"{message_id}.{timestamp}.".encode() + body
    standard_mac = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return {
        "X-Webhook-Signature": f"sha256={body_mac}",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{base64.b64encode(standard_mac).decode()}",
    }
