// A job: status and controls, the live loss chart and event log, and its checkpoints.
import { memo } from "preact/compat";
import { useEffect, useState } from "preact/hooks";
import { JobFailedError, type components, type EventObject, type JobObject } from "@client";
import { useSession } from "../app";
import { describe, ErrorNote, Fact, FINAL_STATUSES, StatusBadge, useAction, useLoad } from "../components/common";
import { LossChart, type MetricsPoint } from "../components/loss-chart";
import { Table } from "../components/table";
import { useDate, useNumbers, useT, type Translate } from "../i18n";
import { href } from "../router";

type Checkpoint = components["schemas"]["CheckpointObject"];

// Events arriving within this window are rendered together.
const BATCH_MS = 100;

/** Points merged by step: the history first, then the stream's, without a step twice. */
function mergePoints(known: MetricsPoint[], more: MetricsPoint[]): MetricsPoint[] {
  const byStep = new Map(known.map((point) => [point.step, point]));
  for (const point of more) byStep.set(point.step, point);
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

interface Estimate {
  billed_tokens: number;
  cost_usd: { low: number; high: number } | null;
  compute_seconds: { low: number; high: number } | null;
}

/** A compute-time range in whole minutes ("about 1 min" when both ends round alike). */
function minutes(range: { low: number; high: number }, t: Translate): string {
  const low = Math.max(1, Math.round(range.low / 60));
  const high = Math.max(1, Math.round(range.high / 60));
  return low === high ? t("job.aboutMinutes", { n: low }) : t("job.minutes", { low, high });
}

/** A metric for reading: integers as they are, others to four decimals. */
function formatMetric(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(4);
}

/** A `metrics` event as a chart point (its numeric fields). */
function pointOf(event: EventObject): MetricsPoint | null {
  const step = event.data.step;
  if (event.type !== "metrics" || typeof step !== "number") return null;
  const metrics: Record<string, number> = {};
  for (const [name, value] of Object.entries(event.data)) {
    if (typeof value === "number" && Number.isFinite(value)) metrics[name] = value;
  }
  return { step, metrics };
}

/** One line of the log; drawn once, not again when later lines arrive. */
const EventLine = memo(function EventLine({ event, date }: { event: EventObject; date: (seconds: number) => string }) {
  const t = useT();
  return (
    <li data-event={event.id} class={`level-${event.level}`}>
      <time dateTime={new Date(event.created_at * 1000).toISOString()}>{date(event.created_at)}</time>{" "}
      <span class="level">{t(`level.${event.level}`)}</span> {event.message}
    </li>
  );
});

export function JobPage({ id }: { id: string }) {
  const t = useT();
  const date = useDate();
  const numbers = useNumbers();
  const session = useSession();
  const path = `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;
  const [job, setJob] = useState<JobObject | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [events, setEvents] = useState<EventObject[]>([]);
  const [points, setPoints] = useState<MetricsPoint[]>([]);
  const [streamError, setStreamError] = useState<string | null>(null);
  const action = useAction();
  const checkpoints = useLoad(
    () => session.request<{ data: Checkpoint[] }>("GET", `${path}/checkpoints?limit=100`),
    [job?.status],
  );
  const reloadCheckpoints = checkpoints.reload;

  useEffect(() => {
    let live = true;
    session
      .request<JobObject>("GET", path)
      // The stream's snapshot may have come first: it is the newer one then.
      .then((found) => live && setJob((known) => known ?? found))
      .catch((reason: unknown) => live && setLoadError(reason));
    // The whole run's metrics, also after it ended; the stream adds the steps that follow.
    session
      .request<{ data: MetricsPoint[] }>("GET", `${path}/metrics`)
      .then((history) => live && setPoints((known) => mergePoints(history.data, known)))
      .catch(() => undefined);
    // Events are applied in batches: a replayed log of thousands arrives in a few renders.
    const pending: EventObject[] = [];
    let timer: ReturnType<typeof setTimeout> | null = null;
    const flush = (): void => {
      timer = null;
      if (!live) return;
      const batch = pending.splice(0);
      setEvents((known) => [...known, ...batch]);
      const steps = batch.map(pointOf).filter((point): point is MetricsPoint => point !== null);
      if (steps.length) setPoints((known) => mergePoints(known, steps));
      if (batch.some((event) => /checkpoint/i.test(event.message))) reloadCheckpoints();
    };
    // The stream replays the whole log from its start, then follows it live; after a drop the
    // client resumes after the last event it saw, so the log has no gap and no duplicate.
    let stop: (() => void) | null = null;
    void session.helpers
      .monitorJob(id, {
        onEvent: (event) => {
          pending.push(event);
          timer ??= setTimeout(flush, BATCH_MS);
        },
        onStatusChange: (_status, latest) => live && setJob(latest),
        onComplete: (latest) => live && setJob(latest),
        onError: (error, latest) => {
          if (!live) return;
          if (latest) setJob(latest);
          if (!(error instanceof JobFailedError)) setStreamError(describe(error));
        },
      })
      .then((monitor) => {
        if (live) stop = monitor.stop;
        else monitor.stop();
      });
    return () => {
      live = false;
      if (timer !== null) clearTimeout(timer);
      stop?.();
    };
  }, [session, id, path, reloadCheckpoints]);

  const control = (verb: "pause" | "resume" | "cancel"): void => {
    if (verb === "cancel" && !window.confirm(t("job.confirmCancel"))) return;
    void action.run(async () => setJob(await session.request<JobObject>("POST", `${path}/${verb}`)));
  };

  if (loadError) return <ErrorNote error={loadError} />;
  if (!job) return <p>{t("common.loading")}</p>;

  // Before training: the cost and time the service expects, as a range.
  const estimate = job.estimate as Estimate | null | undefined;
  const latest = points.at(-1)?.metrics;
  const total = latest?.total_steps;
  const step = points.at(-1)?.step ?? 0;
  const finished = FINAL_STATUSES.has(job.status);

  return (
    <article aria-labelledby="job-title">
      <h1 id="job-title">{t("job.title", { id: job.id })}</h1>
      <dl class="facts">
        <Fact label={t("common.status")} aria-live="polite" data-status={job.status}>
          <StatusBadge status={job.status} />
        </Fact>
        <Fact label={t("job.base")}>{job.model}</Fact>
        <Fact label={t("jobs.method")}>{t(`method.${job.method.type}`)}</Fact>
        <Fact label={t("jobs.result")}>{job.fine_tuned_model ?? "—"}</Fact>
        <Fact label={t("job.trainedTokens")}>{job.trained_tokens ?? "—"}</Fact>
        <Fact label={t("common.created")}>{date(job.created_at)}</Fact>
        {estimate && (
          <Fact label={t("job.estimate")} data-estimate>
            {estimate.cost_usd
              ? `${numbers.usd(estimate.cost_usd.low)} – ${numbers.usd(estimate.cost_usd.high)}`
              : t("new.costLocal")}
            {estimate.compute_seconds && ` · ${minutes(estimate.compute_seconds, t)}`}
          </Fact>
        )}
      </dl>
      {total ? (
        <p>
          <label for="job-progress">{t("job.progress", { step, total })}</label>{" "}
          <progress id="job-progress" max={total} value={step} />
        </p>
      ) : null}
      {job.error && <p class="error">{t("job.error", { message: job.error.message })}</p>}
      <div class="actions">
        <button type="button" disabled={action.busy || job.status !== "running"} onClick={() => control("pause")}>
          {t("job.pause")}
        </button>
        <button type="button" disabled={action.busy || job.status !== "paused"} onClick={() => control("resume")}>
          {t("job.resume")}
        </button>
        <button type="button" class="danger" disabled={action.busy || finished} onClick={() => control("cancel")}>
          {t("job.cancel")}
        </button>
      </div>
      <ErrorNote error={action.error} />
      {streamError && <p class="error" role="alert">{t("job.streamLost", { message: streamError })}</p>}

      <section aria-labelledby="chart-title">
        <h2 id="chart-title">{t("job.chart")}</h2>
        <LossChart points={points} />
      </section>

      <section aria-labelledby="checkpoints-title">
        <h2 id="checkpoints-title">{t("job.checkpoints")}</h2>
        <ErrorNote error={checkpoints.error} />
        {checkpoints.data?.data.length ? (
          <Table head={[t("common.step"), t("job.checkpointModel"), t("job.metrics"), t("common.actions")]}>
                {checkpoints.data.data.map((checkpoint) => (
                  <tr key={checkpoint.id}>
                    <td>{checkpoint.step_number}</td>
                    <td><code>{checkpoint.fine_tuned_model_checkpoint}</code></td>
                    <td>
                      {Object.entries(checkpoint.metrics)
                        .filter(([name, value]) => name !== "step" && typeof value === "number")
                        .map(([name, value]) => `${name} ${formatMetric(Number(value))}`)
                        .join(", ")}
                    </td>
                    <td class="row-actions">
                      <a href={href({ page: "models", model: checkpoint.fine_tuned_model_checkpoint })}>
                        {t("job.tryIt")}
                      </a>
                      <a href={href({ page: "new", model: checkpoint.fine_tuned_model_checkpoint })}>
                        {t("job.startFrom")}
                      </a>
                    </td>
                  </tr>
                ))}
          </Table>
        ) : (
          <p>{t("common.none")}</p>
        )}
      </section>

      <section aria-labelledby="log-title">
        <h2 id="log-title">{t("job.log")}</h2>
        <p class="hint">{t("job.logCount", { count: events.length })}</p>
        {/* A log, but not read aloud line by line: a replay is thousands of lines. */}
        <div class="log" role="log" aria-live="off" aria-labelledby="log-title" tabIndex={0}>
          <ol>
          {events.map((event) => (
            <EventLine key={event.id} event={event} date={date} />
          ))}
          </ol>
        </div>
      </section>
    </article>
  );
}
