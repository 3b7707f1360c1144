"""End to end: the real server sends OpenAI's signed `fine_tuning.job.*` webhooks; endpoints are
managed with the openai SDK's `client.webhooks`, deliveries verified with its `unwrap`, and a
receiver that fails three times gets exactly one accepted delivery, across a kill -9."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from openai import OpenAI
from openai.types.webhooks import FineTuningJobCancelledWebhookEvent

from tests.factories import chat_file
from tests.processes import keyed_env, start_server, stop_server
from tests.webhooks.receiver import receiver


def test_webhooks_survive_a_crash_and_reach_a_flaky_receiver_once(
    database_url: str, tmp_path: Path, tiny_model_dir: Path
):
    env, key = keyed_env(
        tmp_path / "data",
        database_url,
        tiny_model_dir.parent,
        embedded_worker="0",  # the job waits in the queue until it is cancelled
        webhooks_allow_private="1",  # the receiver is on loopback
        webhook_retry_base_seconds="0.3",
        webhook_timeout_seconds="2",
        webhook_poll_seconds="0.1",
    )
    with receiver() as hooks:
        server = start_server(tmp_path / "first", env)
        try:
            client = OpenAI(base_url=server.api_url, api_key=key, max_retries=0)
            assert client.webhooks.event_types.list().data == [
                "fine_tuning.job.succeeded",
                "fine_tuning.job.failed",
                "fine_tuning.job.cancelled",
            ]
            endpoint = client.webhooks.create(
                name="mail back end", url=hooks.url, event_types=["fine_tuning.job.cancelled"]
            )
            secret = endpoint.signing_secret
            assert [e.id for e in client.webhooks.list()] == [endpoint.id]
            assert client.webhooks.retrieve(endpoint.id).signing_secret_hint.endswith(secret[-4:])
            updated = client.webhooks.update(endpoint.id, name="IAPosteManager")
            assert updated.name == "IAPosteManager"
            tested = client.webhooks.test(endpoint.id, event_type="fine_tuning.job.cancelled")
            assert (tested.status_code, tested.success) == (200, True)
            [sample] = hooks.received
            assert client.webhooks.unwrap(sample.body, sample.headers, secret=secret).data.id == (
                "ftjob-test"
            )

            hooks.statuses.extend([500, 500, 500])  # the next three deliveries fail
            training = client.files.create(file=("mails.jsonl", chat_file(12)), purpose="fine-tune")
            job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
            client.fine_tuning.jobs.cancel(job.id)
            hooks.wait_for(2)  # the test, then the first (failed) attempt
        finally:
            server.process.kill()  # kill -9: the retry is in the database, nowhere else
            server.process.wait()

        server = start_server(tmp_path / "second", env)
        try:
            received = hooks.wait_for(5, timeout=60)
            time.sleep(1.5)  # nothing more may come after the accepted one
            deliveries = httpx.get(
                f"{server.api_url}/webhook_endpoints/{endpoint.id}/deliveries",
                headers={"Authorization": f"Bearer {key}"},
            ).json()["data"]
        finally:
            stop_server(server)

    attempts = received[1:]
    assert len(hooks.received) == 5
    assert [r.status for r in attempts] == [500, 500, 500, 200]
    assert len({r.headers["webhook-id"] for r in attempts}) == 1  # one message, four attempts
    sdk = OpenAI(api_key="unused", webhook_secret=secret)
    events = [sdk.webhooks.unwrap(r.body, r.headers) for r in attempts]
    assert all(isinstance(e, FineTuningJobCancelledWebhookEvent) for e in events)
    assert {e.data.id for e in events} == {job.id}
    assert len({e.id for e in events}) == 1
    delivery, test = deliveries
    assert (delivery["status"], delivery["attempts"], delivery["test"]) == ("delivered", 4, False)
    assert (test["status"], test["test"]) == ("delivered", True)
