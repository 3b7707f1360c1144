// Leaving OpenAI: inventory, import and record, re-train here, compare with the recorded answers.
import { useEffect, useState } from "preact/hooks";
import { ServiceError, type components, type JobObject } from "@client";
import { useSession } from "../app";
import { ErrorNote, StatusBadge, useAction } from "../components/common";
import { useT } from "../i18n";
import { ModelOptions, useModels } from "../models";
import { href } from "../router";
import { EvaluationView } from "./models";

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

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

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
  const localBase = base || models.data?.find((model) => model.owned_by === "local")?.id || "";
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

  // A run of the exit is read again every second until it ends, then the inventory is refreshed.
  useEffect(() => {
    if (run?.status !== "running") return;
    const timer = setTimeout(() => {
      session
        .request<ExitRun>("GET", exitPath)
        .then((latest) => {
          setRun(latest);
          if (latest.status !== "running") loadInventory();
        })
        .catch(() => undefined);
    }, 1000);
    return () => clearTimeout(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [session, run, exitPath]);

  // Re-runs still training are read again every two seconds.
  useEffect(() => {
    const live = Object.entries(reruns).filter(([, job]) => !FINAL.has(job.status));
    if (live.length === 0) return;
    const timer = setTimeout(() => {
      void Promise.all(
        live.map(async ([origin, job]) => [origin, await session.request<JobObject>("GET", `/v1/fine_tuning/jobs/${job.id}`)] as const),
      )
        .then((latest) => setReruns((known) => ({ ...known, ...Object.fromEntries(latest) })))
        .catch(() => undefined);
    }, 2000);
    return () => clearTimeout(timer);
  }, [session, reruns]);

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
            <div class="field">
              <label for="exit-provider">{t("exit.provider")}</label>
              <input id="exit-provider" required value={provider} onInput={(e) => setProvider((e.target as HTMLInputElement).value)} />
            </div>
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
          <div class="field">
            <label for="exit-prompts">{t("exit.promptsFile")}</label>
            <input id="exit-prompts" value={promptsFile} placeholder="file-…" onInput={(e) => setPromptsFile((e.target as HTMLInputElement).value)} />
          </div>
          <button type="submit" disabled={act.busy || run?.status === "running"}>
            {t("exit.run")}
          </button>
        </form>
        {run && (
          <div aria-live="polite" data-exit-status={run.status}>
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
              <p>
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
          <div class="field">
            <label for="exit-base">{t("exit.base")}</label>
            <input id="exit-base" list="exit-bases" value={base} placeholder={localBase} onInput={(e) => setBase((e.target as HTMLInputElement).value)} />
            <ModelOptions id="exit-bases" models={models.data?.filter((model) => model.owned_by === "local") ?? null} />
          </div>
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">{t("exit.models")}</th>
                  <th scope="col">{t("exit.shutdown")}</th>
                  <th scope="col">{t("exit.recorded")}</th>
                  <th scope="col">{t("exit.retrained")}</th>
                  <th scope="col">{t("common.actions")}</th>
                </tr>
              </thead>
              <tbody>
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
                          disabled={act.busy || !origin || !localBase || (again !== undefined && !FINAL.has(again.status))}
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
              </tbody>
            </table>
          </div>
          <ErrorNote error={act.error} />
          {Object.entries(comparisons).map(([model, evaluation]) => (
            <EvaluationView key={model} evaluation={evaluation} />
          ))}
        </section>
      )}
    </section>
  );
}
