// The jobs list, kept live by the project's stream.
import { useEffect, useState } from "preact/hooks";
import type { JobObject } from "@client";
import { useSession } from "../app";
import { ErrorNote, StatusBadge, useLoad } from "../components/common";
import { Table } from "../components/table";
import { useDate, useT } from "../i18n";
import { href } from "../router";
import { followProject } from "../stream";

interface JobList {
  data: JobObject[];
  has_more: boolean;
}

interface Progress {
  step: number;
  total_steps: number | null;
}

export function JobsPage() {
  const t = useT();
  const date = useDate();
  const session = useSession();
  const [limit, setLimit] = useState(20);
  const jobs = useLoad(
    () => session.request<JobList>("GET", `/v1/fine_tuning/jobs?limit=${limit}`),
    [limit],
  );
  const [progress, setProgress] = useState<Record<string, Progress>>({});

  const [ended, setEnded] = useState<string | null>(null);

  useEffect(
    () =>
      followProject(session, {
        onMessage: (message) => {
          if (message.type !== "job") return;
          const job = message.job as JobObject;
          if (message.progress) {
            const step = message.progress;
            setProgress((known) => ({ ...known, [job.id]: step }));
          }
          jobs.update((list) => ({
            has_more: list?.has_more ?? false,
            data: upsert(list?.data ?? [], job, list?.has_more ?? false),
          }));
        },
        // Live-only: what changed before the stream opened (or while it was down) is listed.
        onOpen: jobs.reload,
        onEnd: setEnded,
      }),
    [session, jobs.update, jobs.reload],
  );

  return (
    <section aria-labelledby="jobs-title">
      <h1 id="jobs-title">{t("jobs.title")}</h1>
      {ended ? (
        <p class="error" role="alert">{t("job.streamLost", { message: ended })}</p>
      ) : (
        <p class="hint">{t("jobs.live")}</p>
      )}
      <ErrorNote error={jobs.error} />
      {jobs.data === null ? (
        <p>{t("common.loading")}</p>
      ) : jobs.data.data.length === 0 ? (
        <p>{t("common.none")}</p>
      ) : (
        <Table head={[t("common.id"), t("common.model"), t("jobs.method"), t("common.status"), t("jobs.progress"), t("common.created"), t("jobs.result")]}>
              {jobs.data.data.map((job) => (
                <tr key={job.id} data-job={job.id}>
                  <td>
                    <a href={href({ page: "job", id: job.id })}>{job.id}</a>
                  </td>
                  <td>{job.model}</td>
                  <td>{t(`method.${job.method.type}`)}</td>
                  <td>
                    <StatusBadge status={job.status} />
                  </td>
                  <td>{progressText(progress[job.id])}</td>
                  <td>{date(job.created_at)}</td>
                  <td>{job.fine_tuned_model ?? "—"}</td>
                </tr>
              ))}
        </Table>
      )}
      {jobs.data?.has_more && (
        <button type="button" class="secondary" onClick={() => setLimit(limit + 20)}>
          {t("jobs.more")}
        </button>
      )}
    </section>
  );
}

function progressText(progress: Progress | undefined): string {
  if (!progress) return "—";
  return progress.total_steps ? `${progress.step} / ${progress.total_steps}` : String(progress.step);
}

/** The list with this job replaced; a job not listed yet is placed by its creation time, unless
 * it is older than the loaded page (it belongs to a page not loaded). */
function upsert(jobs: JobObject[], job: JobObject, hasMore: boolean): JobObject[] {
  if (jobs.some((known) => known.id === job.id)) {
    return jobs.map((known) => (known.id === job.id ? job : known));
  }
  const oldest = jobs.at(-1);
  if (hasMore && oldest && job.created_at < oldest.created_at) return jobs;
  return [...jobs, job].sort((a, b) => b.created_at - a.created_at);
}
