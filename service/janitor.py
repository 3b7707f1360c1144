"""Housekeeping: remove expired files and stream tickets, old idempotency records, abandoned
upload leftovers, the parts of multipart uploads left pending past their hour, and webhook
deliveries finished more than 30 days ago.

`sweep()` is one deterministic pass (tests call it); the app runs it at start-up and then
every `FT_JANITOR_INTERVAL_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from sqlalchemy import and_, or_
from sqlmodel import col, delete, select

from service.db import Database
from service.events.models import StreamTicket
from service.files.models import File
from service.files.scratch import MIN_AGE_SECONDS, remove_unheld
from service.files.service import content_path
from service.idempotency import IN_PROGRESS_LEASE_SECONDS, IdempotencyRecord
from service.ids import now
from service.uploads.service import expire_uploads
from service.webhooks.models import WebhookMessage

log = logging.getLogger(__name__)

# Delivered or failed webhook messages stay listed this long.
WEBHOOK_HISTORY_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class SweepResult:
    """What one pass removed."""

    files: int
    idempotency_records: int
    upload_leftovers: int
    stream_tickets: int = 0
    webhook_messages: int = 0


async def sweep(*, database: Database, files_dir: Path, idempotency_ttl: float) -> SweepResult:
    """Remove what has expired; safe to run on several replicas at once."""
    async with database.session() as session:
        expired = list(
            (
                await session.exec(
                    select(File.id).where(
                        col(File.expires_at).is_not(None), col(File.expires_at) <= now()
                    )
                )
            ).all()
        )
        if expired:
            await session.exec(delete(File).where(col(File.id).in_(expired)))
        t = time.time()
        records = await session.exec(
            delete(IdempotencyRecord).where(
                or_(
                    col(IdempotencyRecord.created_at) < t - idempotency_ttl,
                    and_(
                        col(IdempotencyRecord.status_code).is_(None),
                        col(IdempotencyRecord.created_at) < t - IN_PROGRESS_LEASE_SECONDS,
                    ),
                )
            )
        )
        tickets = await session.exec(delete(StreamTicket).where(col(StreamTicket.expires_at) < t))
        messages = await session.exec(
            delete(WebhookMessage).where(
                # A test left pending (its request cancelled) is never retried: finished too.
                or_(
                    col(WebhookMessage.status).in_(("delivered", "failed")),
                    col(WebhookMessage.is_test),
                ),
                col(WebhookMessage.created_at) < t - WEBHOOK_HISTORY_SECONDS,
            )
        )
        await session.commit()
        await expire_uploads(session=session, files_dir=files_dir)
    # Rows first, then content: a crash in between leaves orphan content, never a dead row.
    for file_id in expired:
        content_path(files_dir, file_id).unlink(missing_ok=True)
    # Uploads that no live process holds: a crash's leftovers go at the next start-up.
    leftovers = await anyio.to_thread.run_sync(remove_unheld, files_dir / "tmp")
    result = SweepResult(
        len(expired), records.rowcount, leftovers, tickets.rowcount, messages.rowcount
    )
    if any(vars(result).values()):
        log.info("janitor removed %s", result)
    return result


async def run_periodically(
    *, database: Database, files_dir: Path, idempotency_ttl: float, interval: float
) -> None:
    """Sweep soon after start-up, then every `interval` seconds until cancelled."""
    # A restart right after a crash finds the dead process's upload younger than MIN_AGE_SECONDS,
    # which a pass keeps (it may be a new upload an instant before its lock). It stopped changing
    # at the crash, before this start: a first pass that late sees it old enough to remove.
    await anyio.sleep(MIN_AGE_SECONDS)
    while True:
        try:
            await sweep(database=database, files_dir=files_dir, idempotency_ttl=idempotency_ttl)
        except Exception:  # a failed pass must not stop the next one
            log.exception("janitor pass failed")
        await anyio.sleep(interval)
