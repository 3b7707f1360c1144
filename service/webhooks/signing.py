"""Standard Webhooks signatures, as OpenAI signs its webhooks and the SDK's `unwrap` checks them."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """Return a fresh signing secret: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signed_headers(
    keys: Sequence[str], *, message_id: str, body: str, at: datetime | None = None
) -> dict[str, str]:
    """Return the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers of `body`,
    with one signature per key (a receiver accepts any of them: rotation keeps old ones)."""
    at = at or datetime.now(UTC)
    signatures = [Webhook(key).sign(msg_id=message_id, timestamp=at, data=body) for key in keys]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
