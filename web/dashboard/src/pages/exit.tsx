// Leaving OpenAI: inventory, import and record, re-train here, compare with the recorded answers.
import { useEffect, useState } from "preact/hooks";
import { ServiceError, type components, type JobObject } from "@client";
import { useSession } from "../app";
import { ErrorNote, FINAL_STATUSES, StatusBadge, useAction } from "../components/common";
import { EvaluationView } from "../components/evaluation";
import { Field, ModelOptions } from "../components/fields";
import { Table } from "../components/table";
import { useT } from "../i18n";
import { href } from "../router";
import { useModels } from "../use-models";

type Evaluation = components["schemas"]["EvaluationObject"];

interface Inventory {
  files: { id: string; filename: string; purpose: string; bytes: number; imported_as: string | null }[];
  jobs: { id: string; status: string; model: string; fine_tuned_model: string | null; imported_as: string | null }[];
  models: { id: string; shutdown_date: string | null; recorded_as: string | null }[];
}

interface ExitRun {
  status: "running" | "completed" | "failed";
  progress: { step: string | null; done: number; total: number };
  report: { files_imported: number; jobs_imported: number; models_recorded: number; skipped: string[] };
  error: string | null;
}

const POLL_MS = 1000;

export function ExitPage() {
  const t = useT();
  const session = useSession();
  const models = useModels();
  const [provider, setProvider] = useState("openai");
  const [promptsFile, setPromptsFile] = useState("");
  const [base, setBase] = useState("");
  const [inventory, setInventory] = useState<Inventory | null>(null);
  const [run, setRun] = useState<ExitRun | null>(null);
  const [reruns, setReruns] = useState<Record<string, JobObject>>({});
  const [comparisons, setComparisons] = useState<Record<string, Evaluation>>({});
  const list = useAction();
  const act = useAction();
  const localBases = (models.data ?? []).filter((model) => model.owned_by === "local").map((model) => model.id);
  const localBase = base || localBases[0] || "";
  const exitPath = `/v1/providers/${encodeURIComponent(provider)}/exit`;

  /** The local job an old model's job was imported as, and its re-run here if there is one. */
  const importedJob = (model: string): string | null =>
    inventory?.jobs.find((job) => job.fine_tuned_model === model)?.imported_as ?? null;

  const loadReruns = async (found: Inventory): Promise<void> => {
    const entries = await Promise.all(
      found.jobs
        .filter((job) => job.imported_as)
        .map(async (job) => {
          const query = `metadata[rerun_of]=${encodeURIComponent(job.imported_as as string)}&limit=1`;
          const page = await session.request<{ data: JobObject[] }>("GET", `/v1/fine_tuning/jobs?${query}`);
          return [job.imported_as as string, page.data[0]] as const;
        }),
    );
    setReruns(Object.fromEntries(entries.filter(([, job]) => job !== undefined)));
  };

  const loadInventory = (): void => {
    void list.run(async () => {
      const found = await session.request<Inventory>("GET", `/v1/providers/${encodeURIComponent(provider)}/inventory`);
      setInventory(found);
      await loadReruns(found);
    });
  };

  // The run of this process, if one was started before this page opened (a 404: none yet).
  useEffect(() => {
    session
      .request<ExitRun>("GET", exitPath)
      .then(setRun)
      .catch(() => undefined);
  }, [session, exitPath]);

  // A running exit is read again every second until it ends (a failed read is tried again),
  // then the inventory is refreshed.
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (run?.status !== "running") return;
    const timer = setTimeout(() => {
      session
        .request<ExitRun>("GET", exitPath)
        .then((latest) => {
          setRun(latest);
          if (latest.status !== "running") loadInventory();
        })
        .catch(() => setTick((n) => n + 1));
    }, POLL_MS);
    return () => clearTimeout(timer);
    // loadInventory reads the provider field of this render, which is what the run is about.
  }, [session, run, exitPath, tick]);

  // Re-runs still training are read again every two seconds, also after a failed read.
  useEffect(() => {
    const live = Object.entries(reruns).filter(([, job]) => !FINAL_STATUSES.has(job.status));
    if (live.length === 0) return;
    const timer = setTimeout(() => {
      void Promise.all(
        live.map(async ([origin, job]) => [origin, await session.request<JobObject>("GET", `/v1/fine_tuning/jobs/${job.id}`)] as const),
      )
        .then((latest) => setReruns((known) => ({ ...known, ...Object.fromEntries(latest) })))
        .catch(() => setTick((n) => n + 1));
    }, 2 * POLL_MS);
    return () => clearTimeout(timer);
  }, [session, reruns, tick]);

  const startExit = (event: Event): void => {
    event.preventDefault();
    void act.run(async () => {
      try {
        setRun(
          await session.request<ExitRun>("POST", exitPath, {
            steps: ["import", "record"],
            ...(promptsFile.trim() && { prompts_file: promptsFile.trim() }),
          }),
        );
      } catch (error) {
        // One run at a time: follow the one already going.
        if (error instanceof ServiceError && error.status === 409) setRun(await session.request<ExitRun>("GET", exitPath));
        else throw error;
      }
    });
  };

  const rerun = (origin: string): void => {
    void act.run(async () => {
      const job = await session.request<JobObject>("POST", `/v1/fine_tuning/jobs/${origin}/rerun`, { model: localBase });
      setReruns((known) => ({ ...known, [origin]: job }));
    });
  };

  const compare = (model: string, recorded: string, origin: string): void => {
    const retrained = reruns[origin]?.fine_tuned_model;
    if (!retrained) return;
    void act.run(async () => {
      // The record asked the imported job's validation prompts: their references and the old
      // model's answers line up prompt by prompt.
      const imported = await session.request<JobObject>("GET", `/v1/fine_tuning/jobs/${origin}`);
      const evaluation = await session.request<Evaluation>("POST", "/v1/email/evaluations", {
        model: retrained,
        file_id: imported.validation_file ?? recorded,
        compare_to: { file_id: recorded },
        max_tokens: 120,
      });
      setComparisons((known) => ({ ...known, [model]: evaluation }));
    });
  };

  return (
    <section aria-labelledby="exit-title">
      <h1 id="exit-title">{t("exit.title")}</h1>
      <p>{t("exit.intro")}</p>

      <section class="card" aria-labelledby="inventory-title">
        <h2 id="inventory-title">{t("exit.inventory")}</h2>
        <form
          onSubmit={(event) => {
            event.preventDefault();
            loadInventory();
          }}
        >
          <div class="row">
            <Field id="exit-provider" label={t("exit.provider")} required value={provider} onInput={setProvider} />
          </div>
          <button type="submit" disabled={list.busy}>
            {t("exit.list")}
          </button>
          <ErrorNote error={list.error} />
        </form>
        {inventory && (
          <p data-inventory>
            {t("exit.counts", {
              files: inventory.files.length,
              jobs: inventory.jobs.length,
              models: inventory.models.length,
              imported: inventory.jobs.filter((job) => job.imported_as).length,
              recorded: inventory.models.filter((model) => model.recorded_as).length,
            })}
          </p>
        )}
      </section>

      <section class="card" aria-labelledby="import-title">
        <h2 id="import-title">{t("exit.import")}</h2>
        <form onSubmit={startExit}>
          <Field id="exit-prompts" label={t("exit.promptsFile")} value={promptsFile} placeholder="file-…" onInput={setPromptsFile} />
          <button type="submit" disabled={act.busy || run?.status === "running"}>
            {t("exit.run")}
          </button>
        </form>
        {run && (
          <div data-exit-status={run.status}>
            <p>
              <label for="exit-progress">
                {t("exit.progress", {
                  status: t(`exit.${run.status}`),
                  step: run.progress.step ?? "—",
                  done: run.progress.done,
                  total: run.progress.total,
                })}
              </label>{" "}
              <progress id="exit-progress" max={Math.max(run.progress.total, 1)} value={run.progress.done} />
            </p>
            {run.status !== "running" && (
              // Announced once, when the run ends (not at every second's progress).
              <p role="status">
                {t("exit.report", {
                  files: run.report.files_imported,
                  jobs: run.report.jobs_imported,
                  models: run.report.models_recorded,
                })}
              </p>
            )}
            {run.report.skipped.length > 0 && (
              <ul>
                {run.report.skipped.map((line) => (
                  <li key={line}>{line}</li>
                ))}
              </ul>
            )}
            {run.error && <p class="error">{run.error}</p>}
          </div>
        )}
      </section>

      {inventory && inventory.models.length > 0 && (
        <section class="card" aria-labelledby="models-exit-title">
          <h2 id="models-exit-title">
            {t("exit.rerun")} · {t("exit.compare")}
          </h2>
          <Field id="exit-base" label={t("exit.base")} list="exit-bases" value={base} placeholder={localBase} onInput={setBase}>
            <ModelOptions id="exit-bases" names={localBases} />
          </Field>
          <Table head={[t("exit.models"), t("exit.shutdown"), t("exit.recorded"), t("exit.retrained"), t("common.actions")]}>
                {inventory.models.map((model) => {
                  const origin = importedJob(model.id);
                  const again = origin ? reruns[origin] : undefined;
                  return (
                    <tr key={model.id} data-old-model={model.id}>
                      <td><code>{model.id}</code></td>
                      <td>{model.shutdown_date ?? "—"}</td>
                      <td>{model.recorded_as ?? "—"}</td>
                      <td>
                        {again ? (
                          <>
                            <a href={href({ page: "job", id: again.id })}>{again.id}</a> <StatusBadge status={again.status} />
                          </>
                        ) : (
                          "—"
                        )}
                      </td>
                      <td class="row-actions">
                        <button
                          type="button"
                          class="secondary"
                          disabled={act.busy || !origin || !localBase || (again !== undefined && !FINAL_STATUSES.has(again.status))}
                          onClick={() => origin && rerun(origin)}
                        >
                          {t("exit.retrain")}
                        </button>
                        <button
                          type="button"
                          class="secondary"
                          disabled={act.busy || !again?.fine_tuned_model || !model.recorded_as}
                          onClick={() => origin && model.recorded_as && compare(model.id, model.recorded_as, origin)}
                        >
                          {t("exit.compareButton")}
                        </button>
                      </td>
                    </tr>
                  );
                })}
          </Table>
          <ErrorNote error={act.error} />
          {Object.entries(comparisons).map(([model, evaluation]) => (
            <EvaluationView key={model} evaluation={evaluation} />
          ))}
        </section>
      )}
    </section>
  );
}
