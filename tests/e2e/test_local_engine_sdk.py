"""End to end with the local engine: the real server (embedded worker) trains a tiny model for
real, and the fine-tuned model answers the openai SDK, with and without streaming."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from pathlib import Path

import gguf
import httpx
from openai import OpenAI
from transformers import AutoModelForCausalLM

from tests.databases import SQLITE_ONLY
from tests.factories import chat_file, job_method
from tests.processes import keyed_env, run_cli, serve, start_server


# SQLite only: the quick start's database. The same routes, leases and export takeover run on
# PostgreSQL in tests/engines and tests/exports; a second live run here added a minute of CI.
@SQLITE_ONLY
def test_fine_tune_then_chat_through_the_sdk(database_url: str, tmp_path: Path, tiny_model_dir):
    env, key = keyed_env(
        tmp_path / "data",
        database_url,
        tiny_model_dir.parent,
        worker_poll_seconds="0.2",
    )
    with serve(tmp_path, env) as server:
        client = OpenAI(base_url=server.api_url, api_key=key, max_retries=0)
        assert "tiny-chat" in [m.id for m in client.models.list()]
        training = client.files.create(file=("emails.jsonl", chat_file(12)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="tiny-chat",
            training_file=training.id,
            suffix="sdk",
            method=job_method(n_epochs=1, batch_size=4, learning_rate_multiplier=50),
        )
        deadline = time.monotonic() + 180
        while job.status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"job still {job.status}:\n{server.stderr()}"
            time.sleep(0.5)
            job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", job.error
        assert job.fine_tuned_model is not None
        assert job.fine_tuned_model.startswith("ft:tiny-chat:personal:sdk:")

        def chat(**options):
            """The same greedy request to the fine-tuned model, with `options` added."""
            return client.chat.completions.create(
                model=job.fine_tuned_model,
                messages=[{"role": "user", "content": "Remercie Mme Durand pour sa commande."}],
                max_completion_tokens=12,
                temperature=0,
                seed=1,
                **options,
            )

        completion = chat()
        assert completion.object == "chat.completion"
        assert completion.choices[0].message.role == "assistant"
        assert completion.choices[0].finish_reason in ("stop", "length")
        assert completion.usage is not None and completion.usage.completion_tokens >= 1
        assert completion._request_id is not None and completion._request_id.startswith("req_")

        stream = chat(stream=True)
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == completion.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")

        # The model can leave: GGUF over HTTP (built by the server in the background, 202
        # until then), the adapter with the command line, against the same database.
        export_url = f"{server.api_url}/models/{job.fine_tuned_model}/export"
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 120
        while (
            got := httpx.get(export_url, params={"format": "gguf"}, headers=headers)
        ).status_code == 202:
            assert time.monotonic() < deadline, got.text
            time.sleep(float(got.headers["retry-after"]) / 4)
        assert got.status_code == 200, got.text
        with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
            tar.extractall(tmp_path / "gguf", filter="data")
        [folder] = (tmp_path / "gguf").iterdir()
        reader = gguf.GGUFReader(folder / "model.gguf")
        assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "llama"
        assert (folder / "Modelfile").read_text().startswith("FROM ./model.gguf")

        archive = tmp_path / "adapter.tar"
        cli = run_cli(
            "export", job.fine_tuned_model, "--format", "adapter", "--output", str(archive), env=env
        )
        assert cli.returncode == 0, cli.stderr
        with tarfile.open(archive) as tar:
            assert any(n.endswith("/adapter_config.json") for n in tar.getnames())

    # An export cut short by kill -9 is built again after the restart, never served half.
    crashed = start_server(tmp_path / "crashed", env)
    try:
        export_url = f"{crashed.api_url}/models/{job.fine_tuned_model}/export"
        started = httpx.get(export_url, params={"format": "merged"}, headers=headers)
        assert started.status_code == 202, started.text
        time.sleep(1.0)  # the build is under way in its child process
    finally:
        crashed.process.kill()
        crashed.process.wait()
    with serve(tmp_path / "restarted", env) as server:
        export_url = f"{server.api_url}/models/{job.fine_tuned_model}/export"
        deadline = time.monotonic() + 120
        while (
            got := httpx.get(export_url, params={"format": "merged"}, headers=headers)
        ).status_code == 202:
            assert time.monotonic() < deadline, got.text
            time.sleep(0.5)
        assert got.status_code == 200, got.text
        assert got.headers["etag"] == f'"{hashlib.sha256(got.content).hexdigest()}"'
        with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
            tar.extractall(tmp_path / "merged", filter="data")
        [folder] = (tmp_path / "merged").iterdir()
        merged = AutoModelForCausalLM.from_pretrained(folder)  # whole, and loads without PEFT
        assert merged.config.architectures == ["LlamaForCausalLM"]
        log = httpx.get(
            f"{server.api_url}/models/{job.fine_tuned_model}/exports/merged/events",
            params={"limit": 100},
            headers=headers,
        ).json()["data"]
        assert any("restarted" in e["message"] for e in log)
