"""The studio's path, start to finish: rated email history -> a redacted dataset -> a fine-tuning
job on the packaged SmolLM2 -> mails asked the way the model was trained, and their checks.

Run the service first (`make run`), then: `.venv/bin/python examples/quickstart.py <API key>`.
`examples/history.jsonl` is the sample history (150 fictional mails, French and English, rated
1-5); put your own sent mails there, in the same shape, to train on them.
"""

import json
import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI

BASE_URL = "http://127.0.0.1:8000/v1"
key = sys.argv[1]
client = OpenAI(base_url=BASE_URL, api_key=key)
studio = httpx.Client(
    base_url=f"{BASE_URL}/email", headers={"Authorization": f"Bearer {key}"}, timeout=600
)

# 1. History -> dataset: mails rated 4 or 5, cleaned, personal data replaced by placeholders,
#    split into training and validation files by user and thread.
history = [json.loads(line) for line in Path(__file__).with_name("history.jsonl").open()]
dataset = studio.post("/datasets", json={"emails": history}).raise_for_status().json()
report = dataset["report"]
print(
    f"dataset {dataset['id']}: {report['n_training']} training and "
    f"{report['n_validation']} validation mails; dropped {report['dropped']}"
)
print("replaced:", report["redaction"]["replaced"])

# 2. A job on the two files, through the openai SDK as any existing code does.
job = client.fine_tuning.jobs.create(
    model="smollm2-135m-instruct",
    training_file=dataset["training_file"],
    validation_file=dataset["validation_file"],
    suffix="emails",
    method={
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 4}},
    },
)
print(f"job {job.id}: {job.estimate['compute_seconds']} s of training expected")
seen: set[str] = set()
while job.status not in ("succeeded", "failed", "cancelled"):
    time.sleep(5)
    job = client.fine_tuning.jobs.retrieve(job.id)
    for event in reversed(client.fine_tuning.jobs.list_events(job.id, limit=100).data):
        if event.id not in seen:
            seen.add(event.id)
            print(" ", event.message)
if job.status != "succeeded":
    sys.exit(f"the job {job.status}: {job.error}")

# 3. Ask it for a mail the way it was trained: the department's system prompt, the template
#    "Write an email ({category}) for: {context}", the request's names and numbers replaced by
#    placeholders as in training and put back in the answer, signed by the sender.
for request in (
    {
        "category": "follow-up",
        "context": "Thank Mr. Okafor for his order of twelve chairs; delivery is on Tuesday.",
        "language": "en",
    },
    {
        "category": "remerciement",
        "context": "Remercier Mme Leclercq pour sa commande et confirmer la livraison mardi.",
        "language": "fr",
    },
):
    mail = (
        studio.post(
            "/compose",
            json={
                "model": job.fine_tuned_model,
                "department": "sales",
                "sender": "Romain Tessereau",
                "temperature": 0.3,
                "seed": 1,
                **request,
            },
        )
        .raise_for_status()
        .json()
    )
    print(f"\n{mail['model']} writes:\n\n{mail['subject']}\n\n{mail['body']}\n")
    checks = mail["checks"]
    print("checks:", {k: checks[k] for k in ("language", "greeting", "closing", "passed")})
