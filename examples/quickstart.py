"""Fine-tune the packaged SmolLM2 on twelve emails and ask the result for an email.

Run the service first (`make run`), then: `.venv/bin/python examples/quickstart.py <API key>`.
"""

import sys
import time
from pathlib import Path

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=sys.argv[1])

training = client.files.create(
    file=Path(__file__).with_name("emails.jsonl").open("rb"), purpose="fine-tune"
)
job = client.fine_tuning.jobs.create(
    model="smollm2-135m-instruct",
    training_file=training.id,
    suffix="emails",
    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
)
while job.status not in ("succeeded", "failed", "cancelled"):
    time.sleep(2)
    job = client.fine_tuning.jobs.retrieve(job.id)
    print(job.status)
for event in reversed(client.fine_tuning.jobs.list_events(job.id, limit=50).data):
    print(event.message)

reply = client.chat.completions.create(
    model=job.fine_tuned_model,
    messages=[{"role": "user", "content": "Thank Mr. Okafor for his order of twelve chairs."}],
    max_completion_tokens=120,
)
print(reply.choices[0].message.content)
