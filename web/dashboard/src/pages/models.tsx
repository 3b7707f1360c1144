// Models: a side-by-side playground, evaluations, promotion/rollback of scopes, the feedback loop.
import { useRef, useState } from "preact/hooks";
import type { components } from "@client";
import { useSession } from "../app";
import { describe, ErrorNote, useAction, useLoad } from "../components/common";
import { useDate, useT } from "../i18n";
import { EvaluationView } from "../components/evaluation";
import { Field, ModelOptions } from "../components/fields";
import { Table } from "../components/table";
import { useModels } from "../use-models";

type Schemas = components["schemas"];
type Evaluation = Schemas["EvaluationObject"];
type Alias = Schemas["AliasObject"];
type AliasChange = Schemas["AliasChangeObject"];
type FeedbackStatus = Schemas["FeedbackStatus"];


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
  // Each send is numbered: a slow answer to an earlier message never replaces a newer one.
  const sent = useRef(0);

  const send = (event: Event): void => {
    event.preventDefault();
    const messages = [
      ...(system.trim() ? [{ role: "system", content: system }] : []),
      { role: "user", content: prompt },
    ];
    const round = ++sent.current;
    const answer = (slot: number, value: { text?: string; error?: string; busy: boolean }): void => {
      if (round === sent.current) setAnswers((known) => ({ ...known, [slot]: value }));
    };
    names.forEach((name, slot) => {
      if (!name.trim()) return;
      answer(slot, { busy: true });
      session
        .request<Schemas["ChatCompletion"]>("POST", "/v1/chat/completions", {
          model: name.trim(),
          messages,
          max_tokens: 200,
        })
        .then((completion) => answer(slot, { busy: false, text: completion.choices[0]?.message.content ?? "" }))
        .catch((error: unknown) => answer(slot, { busy: false, error: describe(error) }));
    });
  };

  return (
    <section aria-labelledby="playground-title" class="card">
      <h2 id="playground-title">{t("models.playground")}</h2>
      <p class="hint">{t("models.playgroundIntro")}</p>
      <form onSubmit={send}>
        <div class="row">
          {names.map((name, slot) => (
            <Field
              key={slot}
              id={`slot-${slot}`}
              label={t("models.slot", { n: slot + 1 })}
              list="model-names"
              value={name}
              onInput={(value) => setNames((known) => known.map((old, index) => (index === slot ? value : old)))}
            />
          ))}
        </div>
        <Field id="playground-system" label={t("models.system")} value={system} onInput={setSystem} />
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

function Evaluations() {
  const t = useT();
  const date = useDate();
  const session = useSession();
  // The project's latest evaluations (without their answers): any of them can be opened again.
  const past = useLoad(
    async () => (await session.request<{ data: Evaluation[] }>("GET", "/v1/email/evaluations?limit=10")).data,
  );
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
      past.reload();
    });
  };
  const open = (id: string): void => {
    void action.run(async () => setCurrent(await session.request<Evaluation>("GET", `/v1/email/evaluations/${id}`)));
  };

  return (
    <section aria-labelledby="evaluations-title" class="card">
      <h2 id="evaluations-title">{t("models.evaluations")}</h2>
      <form onSubmit={start}>
        <div class="row">
          <Field id="eval-model" label={t("models.evalModel")} list="model-names" required value={model} onInput={setModel} />
          <Field id="eval-baseline" label={t("models.evalBaseline")} list="model-names" value={baseline} onInput={setBaseline} />
          <Field id="eval-judge" label={t("models.evalJudge")} list="model-names" value={judge} onInput={setJudge} />
        </div>
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
      {past.data && past.data.length > 0 && (
        <details>
          <summary>{t("models.pastEvaluations", { count: past.data.length })}</summary>
          <Table head={[t("common.created"), t("models.evalModel"), t("models.evalBaseline"), t("models.verdict"), t("common.actions")]}>
                {past.data.map((evaluation) => {
                  const verdict = evaluation.summary?.verdict as { passed: boolean } | undefined;
                  const compared = evaluation.compare_to as { model?: string; file_id?: string } | null;
                  return (
                    <tr key={evaluation.id}>
                      <td>{date(evaluation.created_at)}</td>
                      <td><code>{evaluation.model}</code></td>
                      <td><code>{compared?.model ?? compared?.file_id ?? "—"}</code></td>
                      <td>
                        {evaluation.status !== "completed"
                          ? evaluation.status
                          : verdict?.passed
                            ? t("models.passed")
                            : t("models.notPassed")}
                      </td>
                      <td>
                        <button type="button" class="secondary" onClick={() => open(evaluation.id)}>
                          {t("models.open")}
                        </button>
                      </td>
                    </tr>
                  );
                })}
          </Table>
        </details>
      )}
    </section>
  );
}

function Aliases() {
  const t = useT();
  const date = useDate();
  const session = useSession();
  const aliases = useLoad(async () => (await session.request<{ data: Alias[] }>("GET", "/v1/email/aliases")).data);
  const [scope, setScope] = useState("");
  const [model, setModel] = useState("");
  // A scope's history and feedback status, read together so they always belong to one scope.
  const [shown, setShown] = useState<{ scope: string; changes: AliasChange[]; feedback: FeedbackStatus } | null>(null);
  const action = useAction();

  const load = async (name: string): Promise<void> => {
    const scopePath = encodeURIComponent(name);
    const [changes, feedback] = await Promise.all([
      session.request<{ data: AliasChange[] }>("GET", `/v1/email/aliases/${scopePath}/history`),
      session.request<FeedbackStatus>("GET", `/v1/email/feedback/${scopePath}`),
    ]);
    setShown({ scope: name, changes: changes.data, feedback });
  };
  const show = (name: string): void => void action.run(() => load(name));
  const change = (name: string, verb: "promote" | "rollback", body: object): void => {
    // What a scope serves is production: going back is confirmed first.
    if (verb === "rollback" && !window.confirm(t("models.confirmRollback", { scope: name }))) return;
    void action.run(async () => {
      await session.request("POST", `/v1/email/aliases/${encodeURIComponent(name)}/${verb}`, body);
      aliases.reload();
      await load(name);
    });
  };

  return (
    <section aria-labelledby="aliases-title" class="card">
      <h2 id="aliases-title">{t("models.aliases")}</h2>
      <ErrorNote error={aliases.error ?? action.error} />
      {aliases.data?.length ? (
        <Table head={[t("models.scope"), t("models.current"), t("common.actions")]}>
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
        </Table>
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
          <Field id="alias-scope" label={t("models.scope")} required value={scope} onInput={setScope} />
          <Field id="alias-model" label={t("common.model")} list="model-names" required value={model} onInput={setModel} />
        </div>
        <button type="submit" disabled={action.busy}>
          {t("models.promote")}
        </button>
      </form>
      {shown && (
        <section aria-labelledby="history-title">
          <h3 id="history-title">
            {t("models.history")}: {shown.scope}
          </h3>
          <ol>
            {shown.changes.map((item) => (
              <li key={item.id}>
                {date(item.created_at)} · {t(`alias.${item.action}`)} · {item.previous_model ?? "—"} → {item.model}
                {item.reason ? ` · ${item.reason}` : ""}
              </li>
            ))}
          </ol>
          <p data-feedback={shown.feedback.pending_feedback}>
            {t("models.feedbackStatus", {
              pending: shown.feedback.pending_feedback,
              threshold: shown.feedback.threshold,
              rewrites: shown.feedback.pending_rewrites,
              minimum: shown.feedback.min_rewrites,
              runs: shown.feedback.runs.length,
            })}
          </p>
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
      <ModelOptions id="model-names" names={names} />
      {models.data && (
        <Table head={[t("common.model"), t("models.owner"), t("common.created")]}>
              {models.data.map((entry) => (
                <tr key={entry.id}>
                  <td><code>{entry.id}</code></td>
                  <td>{entry.owned_by}</td>
                  <td>{date(entry.created)}</td>
                </tr>
              ))}
        </Table>
      )}
      {models.data && <Playground preset={model} models={names} />}
      <Evaluations />
      <Aliases />
    </section>
  );
}
