"""An account at the provider as the exit finds it: data files and ended jobs, made through
the OpenAI SDK against the double (shared by the exit's API, command-line and dashboard tests)."""

from __future__ import annotations

from openai import AsyncOpenAI

from tests.factories import chat_example, chat_file, jsonl
from tests.upstream.openai_double import OpenAIDouble


async def history(double: OpenAIDouble) -> dict[str, str]:
    """What an account holds at the provider before the exit: files and four ended jobs."""
    client = AsyncOpenAI(base_url=double.url, api_key=double.api_key, max_retries=0)
    async with client:
        training = await client.files.create(
            file=("emails.jsonl", chat_file(12)), purpose="fine-tune"
        )
        validation = await client.files.create(
            file=("check.jsonl", jsonl([chat_example(i) for i in range(40, 50)])),
            purpose="fine-tune",
        )
        # Too few examples for this service's checks: reported, not imported.
        await client.files.create(file=("tiny.jsonl", chat_file(3)), purpose="fine-tune")
        jobs = {}
        for name, extra in (
            ("validated", {"validation_file": validation.id, "suffix": "support"}),
            ("plain", {"suffix": "sales"}),
            ("failed", {"metadata": {"double_outcome": "failed"}}),
            ("second", {"validation_file": validation.id}),
        ):
            job = await client.fine_tuning.jobs.create(
                model="gpt-4o-mini-2024-07-18", training_file=training.id, seed=5, **extra
            )
            await double.run_to_end(job.id)
            jobs[name] = job.id
    return jobs
