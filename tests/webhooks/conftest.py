"""Webhook tests send to a receiver on loopback (allowed here, as an operator allows it with
FT_WEBHOOKS_ALLOW_PRIVATE=1) and retry quickly; SSRF tests turn the allowance off."""

from __future__ import annotations

import pytest

from service.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhooks_allow_private": True,
            "webhook_retry_base_seconds": 0.05,
            "webhook_poll_seconds": 0.05,
            "webhook_timeout_seconds": 2.0,
        }
    )
