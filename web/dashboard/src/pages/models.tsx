// Models: a side-by-side playground, evaluations, promotion/rollback of scopes, the feedback loop.
import { useState } from "preact/hooks";
import type { components } from "@client";
import { useSession } from "../app";
import { describe, ErrorNote, useAction, useLoad } from "../components/common";
import { useDate, useT } from "../i18n";
import { ModelOptions, useModels } from "../models";

type Schemas = components["schemas"];
type Evaluation = Schemas["EvaluationObject"];
type Alias = Schemas["AliasObject"];
type AliasChange = Schemas["AliasChangeObject"];
type FeedbackStatus = Schemas["FeedbackStatus"];

interface EvaluationResult {
  prompt: string;
  response: string | null;
  success: boolean;
  rouge_l: number | null;
  checks: { passed: boolean };
  compare?: { response: string | null; rouge_l: number | null; checks: { passed: boolean } };
  judgement?: { outcome: "win" | "loss" | "tie" };
}

const SLOTS = 3;

function Playground({ preset, models }: { preset?: string; models: string[] }) {
  const t = useT();
  const session = useSession();
  const [names, setNames] = useState<string[]>(() => {
    const first = [preset, ...models].filter((name): name is string => !!name);
    return Array.from({ length: SLOTS }, (_, index) => first[index] ?? "");
  });
  const [system, setSystem] = useState("");
  const [prompt, setPrompt] = useState("");
  const [answers, setAnswers] = useState<Record<number, { text?: string; error?: string; busy: boolean }>>({});

  const send = (event: Event): void => {
    event.preventDefault();
    const messages = [
      ...(system.trim() ? [{ role: "system", content: system }] : []),
      { role: "user", content: prompt },
    ];
    names.forEach((name, slot) => {
      if (!name.trim()) return;
      setAnswers((known) => ({ ...known, [slot]: { busy: true } }));
      session
        .request<Schemas["ChatCompletion"]>("POST", "/v1/chat/completions", {
          model: name.trim(),
          messages,
          max_tokens: 200,
        })
        .then((completion) =>
          setAnswers((known) => ({
            ...known,
            [slot]: { busy: false, text: completion.choices[0]?.message.content ?? "" },
          })),
        )
        .catch((error: unknown) =>
          setAnswers((known) => ({ ...known, [slot]: { busy: false, error: describe(error) } })),
        );
    });
  };

  return (
    <section aria-labelledby="playground-title" class="card">
      <h2 id="playground-title">{t("models.playground")}</h2>
      <p class="hint">{t("models.playgroundIntro")}</p>
      <form onSubmit={send}>
        <div class="row">
          {names.map((name, slot) => (
            <div class="field" key={slot}>
              <label for={`slot-${slot}`}>{t("models.slot", { n: slot + 1 })}</label>
              <input
                id={`slot-${slot}`}
                list="playground-models"
                value={name}
                onInput={(e) => {
                  const value = (e.target as HTMLInputElement).value;
                  setNames((known) => known.map((old, index) => (index === slot ? value : old)));
                }}
              />
            </div>
          ))}
        </div>
        <datalist id="playground-models">
          {models.map((model) => (
            <option key={model} value={model} />
          ))}
        </datalist>
        <div class="field">
          <label for="playground-system">{t("models.system")}</label>
          <input id="playground-system" value={system} onInput={(e) => setSystem((e.target as HTMLInputElement).value)} />
        </div>
        <div class="field">
          <label for="playground-prompt">{t("models.prompt")}</label>
          <textarea
            id="playground-prompt"
            rows={3}
            required
            value={prompt}
            onInput={(e) => setPrompt((e.target as HTMLTextAreaElement).value)}
          />
        </div>
        <button type="submit" disabled={!prompt.trim()}>
          {t("models.send")}
        </button>
      </form>
      <div class="columns" aria-live="polite">
        {names.map((name, slot) =>
          name.trim() && answers[slot] ? (
            <section key={slot} class="answer" data-slot={slot} aria-busy={answers[slot].busy}>
              <h3>{t("models.answer", { model: name })}</h3>
              {answers[slot].busy ? (
                <p>{t("common.loading")}</p>
              ) : answers[slot].error ? (
                <p class="error">{answers[slot].error}</p>
              ) : (
                <p class="answer-text">{answers[slot].text}</p>
              )}
            </section>
          ) : null,
        )}
      </div>
    </section>
  );
}

export function EvaluationView({ evaluation }: { evaluation: Evaluation }) {
  const t = useT();
  const results = (evaluation.results ?? []) as unknown as EvaluationResult[];
  const summary = evaluation.summary ?? {};
  const compared = evaluation.compare_to as { model?: string; file_id?: string } | null;
  const baseline = compared?.model ?? (compared?.file_id ? t("models.recorded", { file: compared.file_id }) : "—");
  const headToHead = summary.head_to_head as { wins: number; losses: number; ties: number } | undefined;
  const verdict = summary.verdict as { passed: boolean; reasons: string[] } | undefined;
  return (
    <section class="evaluation" data-evaluation={evaluation.id} data-status={evaluation.status}>
      <h3>
        {evaluation.model} · {baseline}
      </h3>
      {evaluation.error && <p class="error">{evaluation.error}</p>}
      {verdict && (
        <p data-passed={String(verdict.passed)}>
          {t("models.verdict")}:{" "}
          <strong class={verdict.passed ? "ok" : "error"}>
            {verdict.passed ? t("models.passed") : t("models.notPassed")}
          </strong>
          {headToHead && ` · ${t("models.headToHead", headToHead)}`}
          {verdict.reasons.length > 0 && ` · ${verdict.reasons.join("; ")}`}
        </p>
      )}
      {results.length > 0 && (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">{t("models.prompt1")}</th>
                <th scope="col">{evaluation.model}</th>
                <th scope="col">{baseline}</th>
                {headToHead && <th scope="col">{t("models.judged")}</th>}
              </tr>
            </thead>
            <tbody>
              {results.map((result, index) => (
                <tr key={index}>
                  <td>{result.prompt}</td>
                  <td>{result.response ?? "—"}</td>
                  <td>{result.compare?.response ?? "—"}</td>
                  {headToHead && <td>{result.judgement?.outcome ?? "—"}</td>}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function Evaluations({ models }: { models: string[] }) {
  const t = useT();
  const session = useSession();
  const [model, setModel] = useState("");
  const [baseline, setBaseline] = useState("");
  const [judge, setJudge] = useState("");
  const [prompts, setPrompts] = useState("");
  const [current, setCurrent] = useState<Evaluation | null>(null);
  const action = useAction();

  const start = (event: Event): void => {
    event.preventDefault();
    void action.run(async () => {
      setCurrent(
        await session.request<Evaluation>("POST", "/v1/email/evaluations", {
          model: model.trim(),
          prompts: prompts.split("\n").map((line) => line.trim()).filter(Boolean),
          ...(baseline.trim() && { compare_to: { model: baseline.trim() } }),
          ...(baseline.trim() && judge.trim() && { judge: judge.trim() }),
          max_tokens: 120,
        }),
      );
    });
  };

  return (
    <section aria-labelledby="evaluations-title" class="card">
      <h2 id="evaluations-title">{t("models.evaluations")}</h2>
      <form onSubmit={start}>
        <div class="row">
          <div class="field">
            <label for="eval-model">{t("models.evalModel")}</label>
            <input id="eval-model" list="eval-models" required value={model} onInput={(e) => setModel((e.target as HTMLInputElement).value)} />
          </div>
          <div class="field">
            <label for="eval-baseline">{t("models.evalBaseline")}</label>
            <input id="eval-baseline" list="eval-models" value={baseline} onInput={(e) => setBaseline((e.target as HTMLInputElement).value)} />
          </div>
          <div class="field">
            <label for="eval-judge">{t("models.evalJudge")}</label>
            <input id="eval-judge" list="eval-models" value={judge} onInput={(e) => setJudge((e.target as HTMLInputElement).value)} />
          </div>
        </div>
        <datalist id="eval-models">
          {models.map((name) => (
            <option key={name} value={name} />
          ))}
        </datalist>
        <div class="field">
          <label for="eval-prompts">{t("models.evalPrompts")}</label>
          <textarea id="eval-prompts" rows={4} required value={prompts} onInput={(e) => setPrompts((e.target as HTMLTextAreaElement).value)} />
        </div>
        <button type="submit" disabled={action.busy}>
          {t("models.evalRun")}
        </button>
        {action.busy && <p role="status">{t("models.evalRunning")}</p>}
        <ErrorNote error={action.error} />
      </form>
      {current && !action.busy && <EvaluationView evaluation={current} />}
    </section>
  );
}

function Aliases({ models }: { models: string[] }) {
  const t = useT();
  const date = useDate();
  const session = useSession();
  const aliases = useLoad(async () => (await session.request<{ data: Alias[] }>("GET", "/v1/email/aliases")).data);
  const [scope, setScope] = useState("");
  const [model, setModel] = useState("");
  const [history, setHistory] = useState<{ scope: string; changes: AliasChange[] } | null>(null);
  const [feedback, setFeedback] = useState<FeedbackStatus | null>(null);
  const action = useAction();

  const show = (name: string): void => {
    void action.run(async () => {
      const path = `/v1/email/aliases/${encodeURIComponent(name)}/history`;
      const changes = (await session.request<{ data: AliasChange[] }>("GET", path)).data;
      setHistory({ scope: name, changes });
      setFeedback(await session.request<FeedbackStatus>("GET", `/v1/email/feedback/${encodeURIComponent(name)}`));
    });
  };
  const change = (name: string, verb: "promote" | "rollback", body: object): void => {
    void action.run(async () => {
      await session.request("POST", `/v1/email/aliases/${encodeURIComponent(name)}/${verb}`, body);
      aliases.reload();
      show(name);
    });
  };

  return (
    <section aria-labelledby="aliases-title" class="card">
      <h2 id="aliases-title">{t("models.aliases")}</h2>
      <ErrorNote error={aliases.error ?? action.error} />
      {aliases.data?.length ? (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">{t("models.scope")}</th>
                <th scope="col">{t("models.current")}</th>
                <th scope="col">{t("common.actions")}</th>
              </tr>
            </thead>
            <tbody>
              {aliases.data.map((alias) => (
                <tr key={alias.scope}>
                  <td>{alias.scope}</td>
                  <td><code>{alias.model}</code></td>
                  <td class="row-actions">
                    <button type="button" class="secondary" onClick={() => show(alias.scope)}>
                      {t("models.history")}
                    </button>
                    <button type="button" class="secondary" onClick={() => change(alias.scope, "rollback", {})}>
                      {t("models.rollback")}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <p>{t("common.none")}</p>
      )}
      <form
        onSubmit={(event) => {
          event.preventDefault();
          change(scope.trim(), "promote", { model: model.trim() });
        }}
      >
        <div class="row">
          <div class="field">
            <label for="alias-scope">{t("models.scope")}</label>
            <input id="alias-scope" required value={scope} onInput={(e) => setScope((e.target as HTMLInputElement).value)} />
          </div>
          <div class="field">
            <label for="alias-model">{t("common.model")}</label>
            <input id="alias-model" list="alias-models" required value={model} onInput={(e) => setModel((e.target as HTMLInputElement).value)} />
          </div>
        </div>
        <datalist id="alias-models">
          {models.map((name) => (
            <option key={name} value={name} />
          ))}
        </datalist>
        <button type="submit" disabled={action.busy}>
          {t("models.promote")}
        </button>
      </form>
      {history && (
        <section aria-labelledby="history-title">
          <h3 id="history-title">
            {t("models.history")}: {history.scope}
          </h3>
          <ol>
            {history.changes.map((item) => (
              <li key={item.id}>
                {date(item.created_at)} · {item.action} · {item.previous_model ?? "—"} → {item.model}
                {item.reason ? ` · ${item.reason}` : ""}
              </li>
            ))}
          </ol>
          {feedback && (
            <p>
              {t("models.feedback")}: {feedback.pending_feedback} / {feedback.threshold} ·{" "}
              {feedback.runs.length} runs · {feedback.current_model ?? "—"}
            </p>
          )}
        </section>
      )}
    </section>
  );
}

export function ModelsPage({ model }: { model?: string }) {
  const t = useT();
  const date = useDate();
  const models = useModels();
  const names = (models.data ?? []).map((entry) => entry.id);
  return (
    <section aria-labelledby="models-title">
      <h1 id="models-title">{t("models.title")}</h1>
      <ErrorNote error={models.error} />
      <ModelOptions id="all-models" models={models.data} />
      {models.data && (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">{t("common.model")}</th>
                <th scope="col">{t("models.owner")}</th>
                <th scope="col">{t("common.created")}</th>
              </tr>
            </thead>
            <tbody>
              {models.data.map((entry) => (
                <tr key={entry.id}>
                  <td><code>{entry.id}</code></td>
                  <td>{entry.owned_by}</td>
                  <td>{date(entry.created)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {models.data && <Playground preset={model} models={names} />}
      <Evaluations models={names} />
      <Aliases models={names} />
    </section>
  );
}
