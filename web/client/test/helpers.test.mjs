// The seed's helpers against a live service: tests/clients/test_web_client.py starts one (with a
// worker and a tiny model) and runs `npm test` with FT_CLIENT_BASE_URL, FT_CLIENT_API_KEY and
// FT_CLIENT_MODEL set.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  createCostCalculator,
  createFineTuningHelpers,
  StreamClosedError,
} from "../dist/index.js";

const baseUrl = process.env.FT_CLIENT_BASE_URL;
const apiKey = process.env.FT_CLIENT_API_KEY;
const model = process.env.FT_CLIENT_MODEL;
const live = { skip: !baseUrl && "FT_CLIENT_BASE_URL is not set (run through pytest)" };
const JOB_TIMEOUT_MS = 180_000;

const examples = Array.from({ length: 12 }, (_, i) => ({
  prompt: `Écrire un email de suivi n°${i} après une réunion`,
  completion: `Bonjour,\n\nMerci pour la réunion n°${i}. Voici le compte rendu.\n\nCordialement`,
}));

async function rest(path) {
  const response = await fetch(`${baseUrl}${path}`, { headers: { Authorization: `Bearer ${apiKey}` } });
  assert.equal(response.status, 200, await response.clone().text());
  return response.json();
}

/** Every event of the job, oldest first, as the REST list gives them. */
async function storedEvents(jobId) {
  const page = await rest(`/v1/fine_tuning/jobs/${jobId}/events?limit=1000`);
  return page.data.reverse().map((event) => event.id);
}

/** Follow a job with monitorJob until it ends; collect what the callbacks saw. */
function follow(helpers, jobId) {
  const seen = { statuses: [], events: [], completed: null, error: null };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`job ${jobId} did not end`)), JOB_TIMEOUT_MS);
    const done = () => {
      clearTimeout(timer);
      monitor.then((m) => m.stop());
      resolve(seen);
    };
    const monitor = helpers.monitorJob(jobId, {
      onStatusChange: (status) => seen.statuses.push(status),
      onEvent: (event) => seen.events.push(event.id),
      onComplete: (job) => {
        seen.completed = job;
        done();
      },
      onError: (error) => {
        seen.error = error;
        done();
      },
    });
    monitor.catch(reject);
  });
}

test("createPreferenceData writes OpenAI's preference rows", () => {
  const helpers = createFineTuningHelpers({ baseUrl: "http://unused", apiKey: "unused" });
  const rows = helpers.createPreferenceData([
    { prompt: "Bienvenue", preferred_completion: "Bienvenue chez nous !", non_preferred_completion: "Salut." },
  ]);
  assert.deepEqual(rows, [
    {
      input: { messages: [{ role: "user", content: "Bienvenue" }] },
      preferred_output: [{ role: "assistant", content: "Bienvenue chez nous !" }],
      non_preferred_output: [{ role: "assistant", content: "Salut." }],
    },
  ]);
});

test("createTrainingFile turns the seed's prompt/completion pairs into chat lines", async () => {
  const helpers = createFineTuningHelpers({ baseUrl: "http://unused", apiKey: "unused" });
  const chat = { messages: [{ role: "user", content: "a" }, { role: "assistant", content: "b" }] };
  const file = await helpers.createTrainingFile([{ prompt: "a", completion: "b" }, chat]);
  const lines = (await file.text()).trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(lines, [chat, chat]);
  assert.equal(file.type, "application/jsonl");
});

test("an email model is created, followed live to its end, and answers", live, async () => {
  const helpers = createFineTuningHelpers({ baseUrl, apiKey });
  const { job, file } = await helpers.createEmailModel(examples, model, {
    suffix: "company-emails",
    epochs: 1,
    metadata: { department: "marketing", language: "french" },
  });
  assert.equal(file.purpose, "fine-tune");
  assert.equal(job.training_file, file.id);
  assert.equal(job.user_provided_suffix, "company-emails");
  assert.deepEqual(job.metadata, { department: "marketing", language: "french" });

  const seen = await follow(helpers, job.id);
  assert.equal(seen.error, null);
  assert.equal(seen.completed.status, "succeeded");
  assert.ok(seen.completed.fine_tuned_model);
  assert.ok(seen.statuses.includes("running"), seen.statuses.join(", "));
  assert.equal(seen.statuses.at(-1), "succeeded");
  assert.deepEqual(seen.events, await storedEvents(job.id));

  const tested = await helpers.testFineTunedModel(seen.completed.fine_tuned_model, [
    "Écrire un email de remerciement après achat",
    "Email de confirmation de rendez-vous",
  ], { maxTokens: 8 });
  assert.equal(tested.testCount, 2);
  assert.equal(tested.successCount, 2, JSON.stringify(tested.results));
  assert.ok(tested.results.every((result) => typeof result.response === "string"));

  const costs = createCostCalculator({ baseUrl, apiKey }).trackActualCost(seen.completed);
  assert.equal(costs.trainedTokens, seen.completed.trained_tokens);
  assert.ok(costs.trainedTokens > 0);
  assert.equal(costs.actualCost, null); // local training is not billed

  const unknown = await helpers.testFineTunedModel("ft:no-such-model", ["Bonjour"]);
  assert.equal(unknown.successCount, 0);
  assert.match(unknown.results[0].error, /model/i);
});

test("a dropped stream resumes after the last event: no gap, no duplicate", live, async () => {
  const urls = [];
  // The first connection drops after two messages (the job's snapshot, then its first event),
  // as a flaky network would drop it.
  class FlakySocket extends WebSocket {
    constructor(url) {
      super(url);
      const number = urls.push(new URL(url));
      let messages = 0;
      this.addEventListener("message", () => {
        if (number === 1 && ++messages === 2) this.close(4000, "simulated drop");
      });
    }
  }
  const helpers = createFineTuningHelpers({ baseUrl, apiKey, WebSocket: FlakySocket });
  const { job } = await helpers.createEmailModel(examples, model, { epochs: 1 });
  const seen = await follow(helpers, job.id);
  assert.equal(seen.error, null);
  assert.ok(urls.length >= 2, `connections: ${urls.length}`);
  assert.equal(urls[0].searchParams.get("after"), null);
  assert.equal(urls[1].searchParams.get("after"), seen.events[0]); // resumed after the drop
  assert.notEqual(urls[0].searchParams.get("ticket"), urls[1].searchParams.get("ticket"));
  const events = await storedEvents(job.id);
  assert.deepEqual(seen.events, events);
  assert.equal(new Set(seen.events).size, events.length);
});

test("stop() during a reconnect opens nothing more and calls nothing", live, async () => {
  let connections = 0;
  let monitor = null;
  const calls = [];
  // Every connection drops at its first message; the monitor is stopped while it waits to
  // open the next one.
  class DroppingSocket extends WebSocket {
    constructor(url) {
      super(url);
      connections += 1;
      this.addEventListener("message", () => this.close(4000, "simulated drop"), { once: true });
      this.addEventListener("close", () => setTimeout(() => monitor.stop(), 20), { once: true });
    }
  }
  const helpers = createFineTuningHelpers({ baseUrl, apiKey, WebSocket: DroppingSocket });
  const { job } = await helpers.createEmailModel(examples, model, { epochs: 1 });
  monitor = await helpers.monitorJob(job.id, {
    onStatusChange: (status) => calls.push(status),
    onEvent: (event) => calls.push(event.id),
    onComplete: () => calls.push("complete"),
    onError: (error) => calls.push(error),
  });
  await new Promise((resolve) => setTimeout(resolve, 2000));
  assert.equal(connections, 1);
  assert.ok(calls.length <= 1, JSON.stringify(calls)); // the snapshot's status at most
});

test("an unknown job ends in onError with the service's 404 close", live, async () => {
  const helpers = createFineTuningHelpers({ baseUrl, apiKey });
  const error = await new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error("no onError within 30 s")), 30_000).unref();
    helpers.monitorJob("ftjob-does-not-exist", { onError: (e) => resolve(e) });
  });
  assert.ok(error instanceof StreamClosedError);
  assert.equal(error.code, 4404);
});

test("the cost estimate counts the service's tokens and leaves no file behind", live, async () => {
  const calculator = createCostCalculator({ baseUrl, apiKey });
  const before = await rest("/v1/files?limit=1000");
  const estimate = await calculator.estimateTrainingCost(examples, model, { epochs: 2 });
  assert.equal(estimate.model, model);
  assert.equal(estimate.report.valid, true);
  assert.equal(estimate.report.n_examples, examples.length);
  assert.equal(estimate.report.n_epochs, 2);
  assert.equal(estimate.tokenCount, estimate.report.billable_tokens * 2);
  assert.ok(estimate.tokenCount > 0);
  assert.equal(estimate.estimatedCost, null); // a local model trains for free
  const after = await rest("/v1/files?limit=1000");
  assert.deepEqual(after.data.map((f) => f.id), before.data.map((f) => f.id));
  // Preference rows are checked as DPO data.
  const helpers = createFineTuningHelpers({ baseUrl, apiKey });
  const rows = helpers.createPreferenceData(examples.map((e) => ({
    prompt: e.prompt, preferred_completion: e.completion, non_preferred_completion: "Salut.",
  })));
  const dpo = await calculator.estimateTrainingCost(rows, model);
  assert.equal(dpo.report.method, "dpo");
  assert.equal(dpo.report.valid, true, JSON.stringify(dpo.report.errors));
});
