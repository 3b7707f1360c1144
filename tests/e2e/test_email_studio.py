"""End to end through the real server: history -> dataset -> local job -> evaluation -> feedback
-> the automatic DPO job -> its evaluation -> promotion; the alias then answers with the new
model. A tiny local model trains for real; the openai SDK drives jobs and chat."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.databases import SQLITE_ONLY
from tests.processes import SHARED_DIR, keyed_env, serve

EMAILS = SHARED_DIR / "data" / "emails"
pytestmark = pytest.mark.skipif(not EMAILS.is_dir(), reason=f"no sample data at {EMAILS}")
SCOPE = "department:support"


def rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (EMAILS / name).read_text("utf-8").splitlines()]


def wait_for(
    check: Callable[[], Any], what: Callable[[], str], server: Any, timeout: float = 240
) -> Any:
    """Poll `check` until it returns something true; fail with the server's log after timeout."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what()}:\n{server.stderr()[-5000:]}")
        time.sleep(0.5)
    return found


# SQLite only: the quick start's database. The studio's watcher and promotions run on PostgreSQL
# in tests/studio (test_watcher_in_worker); a second live run here added a minute of CI.
@SQLITE_ONLY
def test_history_to_a_promoted_model_improved_from_feedback(
    database_url: str, tmp_path: Path, tiny_model_dir
):
    env, key = keyed_env(
        tmp_path / "data",
        database_url,
        tiny_model_dir.parent,
        worker_poll_seconds="0.2",
        studio_poll_seconds="0.5",
    )
    with serve(tmp_path, env) as server, contextlib.ExitStack() as stack:
        sdk = stack.enter_context(OpenAI(base_url=server.api_url, api_key=key, max_retries=0))
        http = stack.enter_context(
            httpx.Client(
                base_url=server.api_url, timeout=300, headers={"Authorization": f"Bearer {key}"}
            )
        )

        # History -> a redacted dataset -> a local job on it (the SDK, as existing code does).
        dataset = http.post(
            "/email/datasets", json={"emails": rows("history.jsonl"), "department": "support"}
        ).json()
        assert dataset["redacted"] and dataset["report"]["n_kept"] >= 10, dataset
        job = sdk.fine_tuning.jobs.create(
            model="tiny-chat",
            training_file=dataset["training_file"],
            suffix="support",
            method={
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {
                        "n_epochs": 1,
                        "batch_size": 4,
                        "learning_rate_multiplier": 10,
                    }
                },
            },
        )
        job = wait_for(
            lambda: (
                (j := sdk.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j
            ),
            "the first job",
            server,
        )
        assert job.status == "succeeded", job.error
        first = job.fine_tuned_model

        # Its evaluation against the base, then its promotion to the scope's alias.
        evaluation = http.post(
            "/email/evaluations",
            json={
                "model": first,
                "prompts": ["Écrire un email de suivi pour: un ticket résolu"],
                "compare_to": {"model": "tiny-chat"},
                "max_tokens": 24,
            },
        ).json()
        assert evaluation["status"] == "completed" and evaluation["summary"]["success_count"] == 1
        promoted = http.post(
            f"/email/aliases/{SCOPE}/promote",
            json={"model": first, "evaluation_id": evaluation["id"]},
        )
        assert promoted.status_code == 200, promoted.text

        # Feedback with rewrites crosses the scope's threshold: one DPO job starts by itself.
        assert (
            http.post("/email/settings", json={"feedback_thresholds": {SCOPE: 12}}).status_code
            == 200
        )
        support = {r["id"] for r in rows("history.jsonl") if r["department"] == "support"}
        rewrites = [
            f for f in rows("feedback.jsonl") if f["email_id"] in support and f["improvements"]
        ][:12]
        for item in rewrites:
            response = http.post(
                "/email/feedback",
                json={
                    "email_id": item["email_id"],
                    "rating": item["rating"],
                    "improvements": item["improvements"],
                },
            )
            assert response.status_code == 200, response.text
        run = response.json()["retraining"]
        assert run is not None and run["n_pairs"] == 12

        seen: list[dict[str, Any]] = []

        def finished() -> dict[str, Any] | None:
            status = http.get(f"/email/feedback/{SCOPE}").json()
            seen[:] = [status]
            latest = status["runs"][0]
            return status if latest["status"] in ("promoted", "rejected", "failed") else None

        status = wait_for(finished, lambda: f"the retraining {seen}", server, timeout=300)
        latest = status["runs"][0]
        assert latest["status"] == "promoted", latest["detail"]
        dpo = sdk.fine_tuning.jobs.retrieve(latest["job_id"])
        assert dpo.method.type == "dpo" and dpo.model == first
        assert dpo.hyperparameters.n_epochs == 1
        improved = dpo.fine_tuned_model
        assert status["current_model"] == improved != first
        judged = http.get(f"/email/evaluations/{latest['evaluation_id']}").json()
        assert judged["summary"]["verdict"]["passed"] and judged["compare_to"] == {"model": first}

        answer = sdk.chat.completions.create(
            model=f"email:{SCOPE}",
            max_completion_tokens=16,
            temperature=0,
            messages=[{"role": "user", "content": "Écrire un email d'excuse pour: un retard"}],
        )
        assert answer.model == improved
        history = http.get(f"/email/aliases/{SCOPE}/history").json()["data"]
        assert [c["model"] for c in history] == [improved, first]
