// Drive the live service with openapi-fetch, typed by openapi-typescript from its document.
// test_generated_clients.py generates schema.d.ts beside this file, compiles both with
// `tsc --strict` and runs `node out/steps.js <base_url> <key> <model> <training jsonl>`.
// The assignments to explicit types are the point: under --strict they only compile when the
// document types the answers exactly (enums, required fields, one content type per operation).
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

declare const process: { argv: string[] };

type Schemas = components["schemas"];
type JobStatus =
  | "validating_files"
  | "queued"
  | "running"
  | "paused"
  | "succeeded"
  | "failed"
  | "cancelled";
// `true` when T is plain `string`: the document must give these fields their values (an enum).
type PlainString<T> = string extends T ? true : false;
const enums: [
  PlainString<Schemas["JobObject"]["status"]>,
  PlainString<Schemas["FileObject"]["purpose"]>,
  PlainString<NonNullable<Schemas["FileObject"]["format"]>>,
  PlainString<Schemas["FileObject"]["status"]>,
] = [false, false, false, false];

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function fail(step: string, error: Schemas["ErrorResponse"]): never {
  throw new Error(`${step}: ${error.error.type}: ${error.error.message}`);
}

async function main(): Promise<void> {
  const [baseUrl, key, model, training] = process.argv.slice(2);
  const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });

  const file = new Blob([training], { type: "application/jsonl" });
  const uploaded = await client.POST("/v1/files", {
    body: { file, purpose: "fine-tune" },
    bodySerializer: (body) => {
      const form = new FormData();
      form.append("purpose", body.purpose);
      form.append("file", file, "train.jsonl");
      return form;
    },
  });
  if (uploaded.error) fail("upload", uploaded.error);
  const fileObject: Schemas["FileObject"] = uploaded.data;
  check(enums.every((plain) => !plain), "enums");
  check(fileObject.purpose === "fine-tune" && fileObject.bytes === file.size, "uploaded file");

  const content = await client.GET("/v1/files/{file_id}/content", {
    params: { path: { file_id: fileObject.id } },
    parseAs: "text",
  });
  if (content.error) fail("download", content.error);
  check(content.data === training, "downloaded content");

  const created = await client.POST("/v1/fine_tuning/jobs", {
    params: { header: { "Idempotency-Key": "generated-typescript-client" } },
    body: {
      model,
      training_file: fileObject.id,
      suffix: "generated-ts",
      method: {
        type: "supervised",
        supervised: {
          hyperparameters: { n_epochs: 2, batch_size: 1, learning_rate_multiplier: 0.5 },
        },
      },
    },
  });
  if (created.error) fail("create job", created.error);
  const job = created.data;
  const status: JobStatus = job.status;
  const fineTunedModel: string | null = job.fine_tuned_model;
  const method: "supervised" | "dpo" | "reinforcement" = job.method.type;
  const epochs: number | "auto" | undefined = job.method.supervised?.hyperparameters?.n_epochs;
  const integrations: Schemas["IntegrationObject"][] | null = job.integrations;
  check(method === "supervised" && epochs === 2 && fineTunedModel === null, "created job");
  check(status !== "succeeded" && integrations === null, "created job status");

  const listed = await client.GET("/v1/fine_tuning/jobs", { params: { query: { limit: 10 } } });
  if (listed.error) fail("list jobs", listed.error);
  check(listed.data.data.some((j) => j.id === job.id), "listed job");

  const path = { fine_tuning_job_id: job.id };
  const retrieved = await client.GET("/v1/fine_tuning/jobs/{fine_tuning_job_id}", {
    params: { path },
  });
  if (retrieved.error) fail("retrieve job", retrieved.error);
  check(retrieved.data.id === job.id, "retrieved job");

  const events = await client.GET("/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", {
    params: { path, query: { limit: 50 } },
  });
  if (events.error) fail("list events", events.error);
  const eventList: Schemas["EventList"] = events.data;
  const data: { [key: string]: unknown } = eventList.data[0].data;
  check(eventList.data.length > 0 && typeof data === "object", "events");

  const cancelled = await client.POST("/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel", {
    params: { path },
  });
  if (cancelled.error) fail("cancel job", cancelled.error);
  check(cancelled.data.status === "cancelled", "cancelled job");

  const missing = await client.GET("/v1/fine_tuning/jobs/{fine_tuning_job_id}", {
    params: { path: { fine_tuning_job_id: "ftjob-missing" } },
  });
  check(missing.error !== undefined && missing.response.status === 404, "missing job");
  if (missing.error === undefined) return;
  const param: string | null = missing.error.error.param;
  check(missing.error.error.type === "invalid_request_error" && param !== undefined, "error");
  console.log("ok");
}

await main();
