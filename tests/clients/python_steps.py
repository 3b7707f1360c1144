"""Drive the live service with the client openapi-python-client generated from its document.

Run by test_generated_clients.py as `python python_steps.py <folder> <package> <base_url> <key>
<model>`, in a process of its own: the generated package is imported from <folder>, as a team
that generated it would, with no edits. Prints `ok` when every step passed.
"""

from __future__ import annotations

import importlib
import io
import sys


def main() -> None:
    folder, package, base_url, key, model = sys.argv[1:6]
    sys.path.insert(0, folder)

    def load(name: str):  # type: ignore[no-untyped-def]
        return importlib.import_module(f"{package}.{name}")

    client = load("client").AuthenticatedClient(base_url=base_url, token=key)
    models, types = load("models"), load("types")
    create_file = load("api.files.create_file")
    download_file = load("api.files.download_file")
    jobs = {
        name: load(f"api.fine_tuning.{name}")
        for name in (
            "create_fine_tuning_job",
            "list_fine_tuning_jobs",
            "retrieve_fine_tuning_job",
            "list_fine_tuning_events",
            "cancel_fine_tuning_job",
        )
    }

    content = sys.stdin.buffer.read()
    uploaded = create_file.sync(
        client=client,
        body=models.CreateFileBody(
            file=types.File(
                payload=io.BytesIO(content), file_name="train.jsonl", mime_type="application/jsonl"
            ),
            purpose=models.CreateFileBodyPurpose.FINE_TUNE,
        ),
    )
    assert isinstance(uploaded, models.FileObject), uploaded
    assert uploaded.purpose == models.FileObjectPurpose.FINE_TUNE
    assert uploaded.bytes_ == len(content)
    downloaded = download_file.sync(uploaded.id, client=client)
    assert isinstance(downloaded, types.File) and downloaded.payload.read() == content

    hyperparameters = models.SupervisedHyperparameters(
        n_epochs=2, batch_size=1, learning_rate_multiplier=0.5
    )
    job = jobs["create_fine_tuning_job"].sync(
        client=client,
        idempotency_key="generated-python-client",
        body=models.JobCreate(
            model=model,
            training_file=uploaded.id,
            suffix="generated",
            method=models.MethodRequest(
                type_=models.MethodRequestType.SUPERVISED,
                supervised=models.SupervisedMethod(hyperparameters=hyperparameters),
            ),
        ),
    )
    assert isinstance(job, models.JobObject), job
    resolved = job.method.supervised.hyperparameters
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier) == (
        2,
        1,
        0.5,
    ), resolved
    assert job.hyperparameters.n_epochs == 2 and job.fine_tuned_model is None

    listed = jobs["list_fine_tuning_jobs"].sync(client=client, limit=10)
    assert isinstance(listed, models.JobList) and job.id in [j.id for j in listed.data]
    retrieved = jobs["retrieve_fine_tuning_job"].sync(job.id, client=client)
    assert isinstance(retrieved, models.JobObject) and retrieved.status == job.status
    events = jobs["list_fine_tuning_events"].sync(job.id, client=client)
    assert isinstance(events, models.EventList) and events.data, events
    assert all(isinstance(e.level, models.EventObjectLevel) for e in events.data)
    cancelled = jobs["cancel_fine_tuning_job"].sync(job.id, client=client)
    assert isinstance(cancelled, models.JobObject), cancelled
    assert cancelled.status == models.JobObjectStatus.CANCELLED

    missing = jobs["retrieve_fine_tuning_job"].sync_detailed("ftjob-missing", client=client)
    assert missing.status_code == 404, missing
    assert isinstance(missing.parsed, models.ErrorResponse), missing.parsed
    assert missing.parsed.error.type_ == "invalid_request_error"
    assert "ftjob-missing" in missing.parsed.error.message
    print("ok")


if __name__ == "__main__":
    main()
