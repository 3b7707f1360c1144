// The seed's `fineTuningHelpers`, with its names and callback shapes, backed by this service.
// Types come from the service's own documents (src/generated, see scripts/generate.mjs).
import type { components } from "./generated/openapi.js";
import type { JobMessage, StreamMessage } from "./generated/stream.js";

export type { components, paths } from "./generated/openapi.js";
export type { EventMessage, HeartbeatMessage, JobMessage, StreamMessage } from "./generated/stream.js";

type Schemas = components["schemas"];
export type FileObject = Schemas["FileObject"];
export type JobObject = Schemas["JobObject"];
export type EventObject = Schemas["EventObject"];
export type JobStatus = JobObject["status"];

export interface ClientOptions {
  /** The service's base URL, e.g. `http://127.0.0.1:8000`. */
  baseUrl: string;
  /** An API key of the project; sent as `Authorization: Bearer`, never put in a URL. */
  apiKey: string;
  /** Defaults to the global `fetch`. */
  fetch?: typeof fetch;
  /** Defaults to the global `WebSocket` (browsers; Node 22, or Node 20 with --experimental-websocket). */
  WebSocket?: typeof WebSocket;
  /** monitorJob reconnects after this long without a message (default 45 s: 3 heartbeats). */
  silenceMs?: number;
}

/** An error answered by the service, in OpenAI's envelope. */
export class ServiceError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    readonly code: string | null,
    message: string,
  ) {
    super(message);
    this.name = "ServiceError";
  }
}

/** The job ended without a model: `status` is "failed" or "cancelled", `job.error` says why. */
export class JobFailedError extends Error {
  readonly status: JobStatus;
  readonly code: string | null;
  constructor(readonly job: JobObject) {
    super(job.error?.message ?? `The job was ${job.status}.`);
    this.name = "JobFailedError";
    this.status = job.status;
    this.code = job.error?.code ?? null;
  }
}

/** The event stream ended for good: a WebSocket close code (4404: no such job), or no link. */
export class StreamClosedError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = "StreamClosedError";
  }
}

/** A training example as the seed writes it, or a chat example as OpenAI's files hold it. */
export type EmailExample =
  | { prompt: string; completion: string }
  | { messages: { role: string; content: string; weight?: 0 | 1 }[] };

export interface PreferenceExample {
  prompt: string;
  preferred_completion: string;
  non_preferred_completion: string;
}

export interface PreferenceRow {
  input: { messages: { role: "user"; content: string }[] };
  preferred_output: { role: "assistant"; content: string }[];
  non_preferred_output: { role: "assistant"; content: string }[];
}

export interface EmailModelOptions {
  suffix?: string;
  epochs?: number;
  batchSize?: number;
  learningRateMultiplier?: number;
  metadata?: Record<string, string>;
  seed?: number;
}

export interface MonitorCallbacks {
  onStatusChange?: (status: JobStatus, job: JobObject) => void;
  onEvent?: (event: EventObject) => void;
  onComplete?: (job: JobObject) => void;
  onError?: (error: Error, job: JobObject | null) => void;
}

export interface Monitor {
  /** Stop following the job (no callback is called after it). */
  stop(): void;
}

export interface TestResult {
  prompt: string;
  success: boolean;
  response?: string;
  error?: string;
}

export interface FineTuningHelpers {
  createTrainingFile(data: readonly object[], filename?: string): Promise<File>;
  uploadTrainingFile(file: Blob, purpose?: string): Promise<FileObject>;
  createPreferenceData(examples: readonly PreferenceExample[]): PreferenceRow[];
  createEmailModel(
    examples: readonly EmailExample[],
    model: string,
    options?: EmailModelOptions,
  ): Promise<{ job: JobObject; file: FileObject }>;
  monitorJob(jobId: string, callbacks: MonitorCallbacks): Promise<Monitor>;
  testFineTunedModel(
    model: string,
    prompts: readonly string[],
    options?: { system?: string; maxTokens?: number },
  ): Promise<{ testCount: number; successCount: number; results: TestResult[] }>;
}

export type CheckReport = Schemas["CheckReport"];

export interface CostEstimate {
  /** Tokens billed for the epochs (exact, counted by the service with the model's tokenizer). */
  tokenCount: number;
  /** US dollars where a provider bills training; null where training is free (local models). */
  estimatedCost: number | null;
  model: string;
  /** The service's whole check: per-example tokens, warnings and errors by line. */
  report: CheckReport;
}

export interface CostCalculator {
  estimateTrainingCost(
    trainingData: readonly object[],
    model: string,
    options?: { method?: "supervised" | "dpo"; epochs?: number },
  ): Promise<CostEstimate>;
  trackActualCost(job: JobObject): { trainedTokens: number; actualCost: number | null } | null;
}

const FINAL_STATUSES = new Set<JobStatus>(["succeeded", "failed", "cancelled"]);
// After a drop the stream opens again from the last event, waiting 250 ms, then twice as long
// after each try that brought no new event (up to 10 s), and gives up after 8 such tries.
const RECONNECT_FIRST_MS = 250;
const RECONNECT_MAX_MS = 10_000;
const MAX_FAILED_CONNECTIONS = 8;
// Three heartbeats (15 s apart by default) missed: the link is dead.
const SILENCE_MS = 45_000;

function asChat(example: object): object {
  if ("prompt" in example && "completion" in example) {
    const { prompt, completion } = example as { prompt: string; completion: string };
    return {
      messages: [
        { role: "user", content: prompt },
        { role: "assistant", content: completion },
      ],
    };
  }
  return example;
}

/** A request to the service: the parsed JSON answer, or a ServiceError. */
export type ServiceRequest = <T>(method: string, path: string, body?: FormData | object) => Promise<T>;

/** A JSON (or multipart) request function to the service as this key; errors become ServiceError. */
export function createRequest(options: ClientOptions): ServiceRequest {
  const base = options.baseUrl.replace(/\/+$/, "");
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const auth = { Authorization: `Bearer ${options.apiKey}` };
  return async <T>(method: string, path: string, body?: FormData | object): Promise<T> => {
    const init: RequestInit = { method, headers: auth };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { ...auth, "Content-Type": "application/json" };
    }
    const response = await doFetch(`${base}${path}`, init);
    const payload = (await response.json().catch(() => null)) as
      | (T & { error?: undefined })
      | { error: Schemas["ErrorResponse"]["error"] }
      | null;
    if (!response.ok) {
      const error = payload && "error" in payload && payload.error ? payload.error : null;
      throw new ServiceError(
        response.status,
        error?.type ?? "http_error",
        error?.code ?? null,
        error?.message ?? `${method} ${path}: HTTP ${response.status}`,
      );
    }
    return payload as T;
  };
}

/** The helpers bound to one service and key. */
export function createFineTuningHelpers(options: ClientOptions): FineTuningHelpers {
  const base = options.baseUrl.replace(/\/+$/, "");
  const Socket = options.WebSocket ?? globalThis.WebSocket;
  const silenceMs = options.silenceMs ?? SILENCE_MS;
  const call = createRequest(options);

  const helpers: FineTuningHelpers = {
    async createTrainingFile(data, filename = "training.jsonl") {
      const lines = data.map((row) => JSON.stringify(asChat(row)));
      return new File([lines.join("\n") + "\n"], filename, { type: "application/jsonl" });
    },

    async uploadTrainingFile(file, purpose = "fine-tune") {
      const form = new FormData();
      form.append("purpose", purpose);
      form.append("file", file, file instanceof File ? file.name : "training.jsonl");
      return call<FileObject>("POST", "/v1/files", form);
    },

    createPreferenceData(examples) {
      return examples.map((example) => ({
        input: { messages: [{ role: "user", content: example.prompt }] },
        preferred_output: [{ role: "assistant", content: example.preferred_completion }],
        non_preferred_output: [{ role: "assistant", content: example.non_preferred_completion }],
      }));
    },

    async createEmailModel(examples, model, options = {}) {
      const file = await helpers.uploadTrainingFile(await helpers.createTrainingFile(examples));
      const hyperparameters: Record<string, number> = {};
      if (options.epochs !== undefined) hyperparameters.n_epochs = options.epochs;
      if (options.batchSize !== undefined) hyperparameters.batch_size = options.batchSize;
      if (options.learningRateMultiplier !== undefined) {
        hyperparameters.learning_rate_multiplier = options.learningRateMultiplier;
      }
      try {
        const job = await call<JobObject>("POST", "/v1/fine_tuning/jobs", {
          model,
          training_file: file.id,
          ...(options.suffix !== undefined && { suffix: options.suffix }),
          ...(options.metadata !== undefined && { metadata: options.metadata }),
          ...(options.seed !== undefined && { seed: options.seed }),
          method: { type: "supervised", supervised: { hyperparameters } },
        });
        return { job, file };
      } catch (error) {
        // A refused job (an unknown model, say) leaves no file behind.
        await call("DELETE", `/v1/files/${file.id}`).catch(() => undefined);
        throw error;
      }
    },

    async monitorJob(jobId, callbacks) {
      let stopped = false;
      let finished = false;
      let socket: WebSocket | null = null;
      let lastEventId: string | null = null;
      let job: JobObject | null = null;
      let delay = RECONNECT_FIRST_MS;
      let failures = 0; // connections in a row that brought no new event
      let timer: ReturnType<typeof setTimeout> | null = null;
      let watchdog: ReturnType<typeof setTimeout> | null = null;

      const quiet = (): void => {
        if (watchdog !== null) clearTimeout(watchdog);
        watchdog = null;
      };
      const done = (): boolean => stopped || finished;

      const fail = (error: Error): void => {
        if (done()) return;
        finished = true;
        quiet();
        socket?.close(1000);
        socket = null;
        callbacks.onError?.(error, job);
      };

      const onJob = (message: JobMessage): void => {
        const previous = job?.status;
        job = message.job;
        if (job.status !== previous) callbacks.onStatusChange?.(job.status, job);
      };

      // The stream closes with 1000 once the job's final event is sent: every event has reached
      // onEvent by then, so onComplete (or onError) comes last.
      const end = (last: JobObject): void => {
        if (last.status === "succeeded") {
          finished = true;
          quiet();
          callbacks.onComplete?.(last);
        } else {
          fail(new JobFailedError(last));
        }
      };

      const reconnect = (): void => {
        if (done()) return;
        if (++failures > MAX_FAILED_CONNECTIONS) {
          fail(new StreamClosedError(1006, `no connection after ${MAX_FAILED_CONNECTIONS} tries`));
          return;
        }
        timer = setTimeout(() => {
          timer = null;
          open().catch(refused);
        }, delay);
        delay = Math.min(delay * 2, RECONNECT_MAX_MS);
      };

      // A refused ticket (a revoked key, say) ends the monitoring; anything else is retried.
      const refused = (error: unknown): void => {
        const status = error instanceof ServiceError ? error.status : 0;
        if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
          fail(error as ServiceError);
        } else {
          reconnect();
        }
      };

      const open = async (): Promise<void> => {
        // A browser cannot set headers on a WebSocket: a single-use ticket opens it.
        const { ticket } = await call<Schemas["StreamTicketObject"]>(
          "POST",
          "/v1/fine_tuning/stream_tickets",
        );
        if (done()) return;
        const url = new URL(`${base}/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events/stream`);
        url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
        url.searchParams.set("ticket", ticket);
        if (lastEventId !== null) url.searchParams.set("after", lastEventId);
        const ws = new Socket(url);
        socket = ws;
        // The server sends a heartbeat every 15 s: a longer silence is a dead link (a laptop
        // that slept, a NAT that forgot the connection), which may never report its close.
        const watch = (): void => {
          quiet();
          watchdog = setTimeout(() => {
            if (socket !== ws || done()) return;
            socket = null;
            ws.close(4000, "no message within the heartbeat window");
            reconnect();
          }, silenceMs);
        };
        watch();
        ws.onmessage = (frame: MessageEvent) => {
          if (socket !== ws || done()) return;
          watch();
          let message: StreamMessage;
          try {
            message = JSON.parse(String(frame.data)) as StreamMessage;
          } catch {
            fail(new StreamClosedError(1007, "the stream sent a frame that is not JSON"));
            return;
          }
          if (message.type === "event") {
            lastEventId = message.event.id;
            failures = 0; // progress: the next drop starts its backoff afresh
            delay = RECONNECT_FIRST_MS;
            callbacks.onEvent?.(message.event);
          } else if (message.type === "job") {
            onJob(message);
          }
        };
        ws.onclose = (close: CloseEvent) => {
          if (socket !== ws || done()) return;
          socket = null;
          quiet();
          if (close.code === 1000 && job !== null && FINAL_STATUSES.has(job.status)) {
            end(job);
          } else if (close.code >= 4400 && close.code < 4500) {
            // 4000 + an HTTP client error: unknown job, refused ticket, bad cursor.
            fail(new StreamClosedError(close.code, close.reason || `closed with ${close.code}`));
          } else {
            reconnect(); // a drop, a restart (1001), a server error (1011), a slow reader (1013)
          }
        };
      };

      await open().catch(refused);
      return {
        stop() {
          stopped = true;
          quiet();
          if (timer !== null) clearTimeout(timer);
          timer = null;
          socket?.close(1000);
          socket = null;
        },
      };
    },

    async testFineTunedModel(model, prompts, options = {}) {
      const results: TestResult[] = [];
      for (const prompt of prompts) {
        const messages = [
          ...(options.system ? [{ role: "system", content: options.system }] : []),
          { role: "user", content: prompt },
        ];
        try {
          const completion = await call<Schemas["ChatCompletion"]>("POST", "/v1/chat/completions", {
            model,
            messages,
            max_tokens: options.maxTokens ?? 200,
          });
          results.push({ prompt, success: true, response: completion.choices[0]?.message.content ?? "" });
        } catch (error) {
          results.push({ prompt, success: false, error: (error as Error).message });
        }
      }
      return {
        testCount: prompts.length,
        successCount: results.filter((result) => result.success).length,
        results,
      };
    },
  };
  return helpers;
}

/** The seed's `costCalculator`, with the service's exact counts instead of length / 4. */
export function createCostCalculator(options: ClientOptions): CostCalculator {
  const helpers = createFineTuningHelpers(options);
  const call = createRequest(options);

  return {
    async estimateTrainingCost(trainingData, model, estimate = {}) {
      const method =
        estimate.method ??
        (trainingData.some((row) => "preferred_output" in row) ? "dpo" : "supervised");
      // The file is checked where it would be trained, then removed: nothing is left behind.
      const file = await helpers.uploadTrainingFile(await helpers.createTrainingFile(trainingData));
      try {
        const report = await call<CheckReport>("POST", `/v1/files/${file.id}/check`, {
          model,
          method,
          n_epochs: estimate.epochs ?? null,
        });
        return {
          tokenCount: report.billed_tokens,
          estimatedCost: report.estimated_cost_usd ?? null,
          model,
          report,
        };
      } finally {
        // Never hides the answer (or the error) of the check.
        await call("DELETE", `/v1/files/${file.id}`).catch(() => undefined);
      }
    },

    trackActualCost(job) {
      if (job.trained_tokens === null) return null;
      return { trainedTokens: job.trained_tokens, actualCost: job.cost_usd ?? null };
    },
  };
}
