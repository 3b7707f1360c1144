// Create a job: a file uploaded or a dataset built from e-mail history, its check, then the method.
import { useEffect, useState } from "preact/hooks";
import type { components, FileObject, JobObject } from "@client";
import { useSession } from "../app";
import { describe, ErrorNote, Fact, useAction } from "../components/common";
import { Field, ModelOptions } from "../components/fields";
import { Table } from "../components/table";
import { useNumbers, useT } from "../i18n";
import { href } from "../router";
import { useModels } from "../use-models";

type CheckReport = components["schemas"]["CheckReport"];
type Method = "supervised" | "dpo" | "reinforcement";

interface DatasetReport {
  n_records: number;
  n_kept: number;
  n_training: number;
  n_validation: number;
  n_dropped: number;
  dropped: Record<string, number>;
  by_language: Record<string, number>;
  redaction: {
    enabled: boolean;
    replaced?: Record<string, number>;
    records_with_personal_data?: number;
  };
}

interface Dataset {
  id: string;
  training_file: string;
  validation_file: string | null;
  method: string;
  redacted: boolean;
  report: DatasetReport;
}

interface Prepared {
  trainingFile: string;
  validationFile: string | null;
  dataset: Dataset | null;
  report: CheckReport;
}

// Reinforcement needs a grader: OpenAI's grader objects, written as JSON.
const DEFAULT_GRADER = JSON.stringify(
  {
    type: "text_similarity",
    name: "close_to_reference",
    input: "{{sample.output_text}}",
    reference: "{{item.reference}}",
    evaluation_metric: "rouge_l",
  },
  null,
  2,
);

/** A number field's value: the number, or "auto" when empty. */
function numberOrAuto(value: string): number | "auto" {
  const number = Number(value);
  return value.trim() === "" || !Number.isFinite(number) ? "auto" : number;
}


/** What a dataset built from e-mail history kept, dropped and replaced. */
function DatasetView({ dataset }: { dataset: Dataset }) {
  const t = useT();
  const report = dataset.report;
  const replaced = Object.entries(report.redaction.replaced ?? {});
  const total = replaced.reduce((sum, [, count]) => sum + count, 0);
  return (
    <section class="card" aria-labelledby="dataset-title" data-dataset={dataset.id}>
      <h2 id="dataset-title">
        {t("new.dataset", { id: dataset.id, train: report.n_training, valid: report.n_validation })}
      </h2>
      <dl class="facts">
        <Fact label={t("new.records")}>{report.n_records}</Fact>
        <Fact label={t("new.kept")}>{report.n_kept}</Fact>
        <Fact label={t("new.dropped")}>
          {report.n_dropped}
          {report.n_dropped > 0 &&
            ` (${Object.entries(report.dropped).map(([reason, count]) => `${reason} ${count}`).join(", ")})`}
        </Fact>
        <Fact label={t("new.languages")}>{Object.entries(report.by_language).map(([lang, count]) => `${lang} ${count}`).join(", ")}</Fact>
      </dl>
      <p data-redactions={total}>
        {report.redaction.enabled
          ? t("new.redacted", {
              count: total,
              records: report.redaction.records_with_personal_data ?? 0,
              types: replaced.map(([type, count]) => `${type} ${count}`).join(", ") || "—",
            })
          : t("new.notRedacted")}
      </p>
    </section>
  );
}

export function CheckReportView({ report }: { report: CheckReport }) {
  const t = useT();
  const numbers = useNumbers();
  const issues = [
    ...report.errors.map((issue) => ({ ...issue, kind: t("new.errors") })),
    ...report.warnings.map((issue) => ({ ...issue, kind: t("new.warnings") })),
  ];
  return (
    <section aria-labelledby="check-title" class="report" data-valid={String(report.valid)}>
      <h2 id="check-title">{t("new.check")}</h2>
      <p class={report.valid ? "ok" : "error"}>{report.valid ? t("new.valid") : t("new.invalid")}</p>
      <dl class="facts">
        <Fact label={t("new.examples")} data-examples={report.n_examples}>{numbers.count(report.n_examples)}</Fact>
        <Fact label={t("new.tokens", { epochs: report.n_epochs })} data-billed-tokens={report.billed_tokens}>{numbers.count(report.billed_tokens)}</Fact>
        <Fact label={t("new.tokenRange")}>
          {report.tokens_per_example.min} – {report.tokens_per_example.max}
        </Fact>
        <Fact label={t("new.cost")}>
          {report.estimated_cost_usd == null ? t("new.costLocal") : numbers.usd(report.estimated_cost_usd)}
        </Fact>
      </dl>
      {issues.length > 0 && (
        // Errors open the list; warnings alone (long files often have many) stay folded.
        <details open={report.n_errors > 0}>
          <summary>
            {t("new.errors")}: {report.n_errors} · {t("new.warnings")}: {report.n_warnings}
          </summary>
          <Table head={[t("new.line"), t("common.status"), t("new.message")]}>
                {issues.map((issue, index) => (
                  <tr key={index}>
                    <td>{issue.line}</td>
                    <td>{issue.kind}</td>
                    <td>{issue.message}</td>
                  </tr>
                ))}
          </Table>
        </details>
      )}
    </section>
  );
}

export function NewJobPage({ model: preset }: { model?: string }) {
  const t = useT();
  const session = useSession();
  const models = useModels();
  const [source, setSource] = useState<"file" | "emails">("file");
  const [file, setFile] = useState<File | null>(null);
  const [minRating, setMinRating] = useState("4");
  const [redact, setRedact] = useState(true);
  const [method, setMethod] = useState<Method>("supervised");
  const [model, setModel] = useState(preset ?? "");
  const [epochs, setEpochs] = useState("");
  const [batch, setBatch] = useState("");
  const [lr, setLr] = useState("");
  const [beta, setBeta] = useState("");
  const [suffix, setSuffix] = useState("");
  const [grader, setGrader] = useState(DEFAULT_GRADER);
  const [prepared, setPrepared] = useState<Prepared | null>(null);
  const [recheckError, setRecheckError] = useState<string | null>(null);
  const prepare = useAction();
  const create = useAction();
  const baseModel = model.trim();

  // The base model is shown, never assumed: a local one is filled in once the list is known.
  const firstLocal = models.data?.find((entry) => entry.owned_by === "local")?.id;
  useEffect(() => {
    if (firstLocal) setModel((known) => known || firstLocal);
  }, [firstLocal]);

  // Another file or source: what was checked no longer stands for what would be trained.
  const choose = (next: { source?: "file" | "emails"; file?: File | null }): void => {
    if (next.source !== undefined) setSource(next.source);
    if (next.file !== undefined) setFile(next.file);
    setPrepared(null);
  };

  const check = (trainingFile: string, chosen: Method) =>
    session.request<CheckReport>("POST", `/v1/files/${trainingFile}/check`, {
      method: chosen,
      model: baseModel,
      ...(epochs.trim() && { n_epochs: Number(epochs) }),
    });

  const upload = async (purpose: string): Promise<FileObject> => {
    const form = new FormData();
    form.append("purpose", purpose);
    form.append("file", file as File, (file as File).name);
    return session.request<FileObject>("POST", "/v1/files", form);
  };

  const onPrepare = (event: Event): void => {
    event.preventDefault();
    void prepare.run(async () => {
      setPrepared(null);
      if (source === "file") {
        const uploaded = await upload("fine-tune");
        const report = await check(uploaded.id, method);
        setPrepared({ trainingFile: uploaded.id, validationFile: null, dataset: null, report });
        return;
      }
      // The history is uploaded as a file of the project, then turned into training examples
      // (personal data replaced) with a held-out validation share.
      const history = await upload("user_data");
      const dataset = await session.request<Dataset>("POST", "/v1/email/datasets", {
        file_id: history.id,
        min_rating: Number(minRating),
        redact,
      });
      const chosen: Method = dataset.method === "dpo" ? "dpo" : "supervised";
      setMethod(chosen);
      const report = await check(dataset.training_file, chosen);
      setPrepared({
        trainingFile: dataset.training_file,
        validationFile: dataset.validation_file,
        dataset,
        report,
      });
    });
  };

  // The billed tokens depend on the epochs: the check is asked again when they change (the
  // service caches the file's analysis, so this only recomputes the bill).
  // Only the latest question's answer is shown; a refusal (epochs out of range) is shown too.
  const trainingFile = prepared?.trainingFile;
  useEffect(() => {
    if (!trainingFile || !baseModel) return;
    let current = true;
    const timer = setTimeout(() => {
      check(trainingFile, method)
        .then((report) => {
          if (!current) return;
          setRecheckError(null);
          setPrepared((known) => (known && known.trainingFile === trainingFile ? { ...known, report } : known));
        })
        .catch((error: unknown) => current && setRecheckError(describe(error)));
    }, 400);
    return () => {
      current = false;
      clearTimeout(timer);
    };
    // `check` is new at each render; these are what it reads.
  }, [trainingFile, epochs, method, baseModel]);

  const onCreate = (event: Event): void => {
    event.preventDefault();
    if (!prepared) return;
    void create.run(async () => {
      const hyperparameters: Record<string, number | "auto"> = {
        n_epochs: numberOrAuto(epochs),
        batch_size: numberOrAuto(batch),
        learning_rate_multiplier: numberOrAuto(lr),
        ...(method === "dpo" && { beta: numberOrAuto(beta) }),
      };
      const section: Record<string, unknown> = { hyperparameters };
      if (method === "reinforcement") {
        try {
          section.grader = JSON.parse(grader) as unknown;
        } catch {
          throw new Error(t("new.graderInvalid"));
        }
      }
      const job = await session.request<JobObject>("POST", "/v1/fine_tuning/jobs", {
        model: baseModel,
        training_file: prepared.trainingFile,
        ...(prepared.validationFile && { validation_file: prepared.validationFile }),
        ...(suffix.trim() && { suffix: suffix.trim() }),
        method: { type: method, [method]: section },
      });
      window.location.hash = href({ page: "job", id: job.id });
    });
  };

  return (
    <section aria-labelledby="new-title">
      <h1 id="new-title">{t("new.title")}</h1>
      <form onSubmit={onPrepare} class="card">
        <fieldset>
          <legend>{t("new.source")}</legend>
          <label class="choice">
            <input type="radio" name="source" checked={source === "file"} onChange={() => choose({ source: "file" })} />{" "}
            {t("new.sourceFile")}
          </label>
          <label class="choice">
            <input type="radio" name="source" checked={source === "emails"} onChange={() => choose({ source: "emails" })} />{" "}
            {t("new.sourceEmails")}
          </label>
        </fieldset>
        <div class="field">
          <label for="training-file">{source === "file" ? t("new.file") : t("new.history")}</label>
          <input
            id="training-file"
            type="file"
            accept=".jsonl,application/jsonl,application/x-ndjson"
            required
            onChange={(e) => choose({ file: (e.target as HTMLInputElement).files?.[0] ?? null })}
          />
        </div>
        {source === "emails" && (
          <div class="row">
            <Field id="min-rating" label={t("new.minRating")} type="number" min="0" step="1" value={minRating} onInput={setMinRating} />
            <label class="choice">
              <input type="checkbox" checked={redact} onChange={(e) => setRedact((e.target as HTMLInputElement).checked)} />{" "}
              {t("new.redact")}
            </label>
          </div>
        )}
        <div class="row">
          <Field id="base-model" label={t("common.model")} value={model} list="model-names" required onInput={setModel}>
            <ModelOptions id="model-names" names={(models.data ?? []).map((entry) => entry.id)} />
          </Field>
          <div class="field">
            <label for="method">{t("new.method")}</label>
            <select id="method" value={method} onChange={(e) => setMethod((e.target as HTMLSelectElement).value as Method)}>
              <option value="supervised">{t("new.supervised")}</option>
              <option value="dpo">{t("new.dpo")}</option>
              <option value="reinforcement">{t("new.reinforcement")}</option>
            </select>
          </div>
        </div>
        <button type="submit" disabled={prepare.busy || !file || !baseModel}>
          {source === "file" ? t("new.upload") : t("new.build")}
        </button>
        <ErrorNote error={prepare.error} />
      </form>

      {prepared?.dataset && <DatasetView dataset={prepared.dataset} />}
      {prepared && <CheckReportView report={prepared.report} />}
      {recheckError && (
        <p class="error" role="alert">
          {t("common.error", { message: recheckError })}
        </p>
      )}

      {prepared?.report.valid && (
        <form onSubmit={onCreate} class="card" aria-labelledby="settings-title">
          <h2 id="settings-title">{t("new.settings")}</h2>
          <div class="row">
            <Field id="epochs" label={t("new.epochs")} type="number" min="1" step="1" placeholder={t("new.auto")} value={epochs} onInput={setEpochs} />
            <Field id="batch" label={t("new.batch")} type="number" min="1" step="1" placeholder={t("new.auto")} value={batch} onInput={setBatch} />
            <Field id="lr" label={t("new.lr")} type="number" min="0" step="any" placeholder={t("new.auto")} value={lr} onInput={setLr} />
            {method === "dpo" && (
              <Field id="beta" label={t("new.beta")} type="number" min="0" step="any" placeholder={t("new.auto")} value={beta} onInput={setBeta} />
            )}
            <Field id="suffix" label={t("new.suffix")} value={suffix} onInput={setSuffix} />
          </div>
          {method === "reinforcement" && (
            <div class="field">
              <label for="grader">{t("new.grader")}</label>
              <textarea id="grader" rows={8} class="code" value={grader} onInput={(e) => setGrader((e.target as HTMLTextAreaElement).value)} />
            </div>
          )}
          <button type="submit" disabled={create.busy}>
            {t("new.create")}
          </button>
          <ErrorNote error={create.error} />
        </form>
      )}
    </section>
  );
}
