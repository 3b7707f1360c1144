// An evaluation's verdict and its prompts with both models' answers (and the judge's calls).
import type { components } from "@client";
import { useT } from "../i18n";

type Evaluation = components["schemas"]["EvaluationObject"];

interface EvaluationResult {
  prompt: string;
  response: string | null;
  success: boolean;
  rouge_l: number | null;
  checks: { passed: boolean };
  compare?: { response: string | null; rouge_l: number | null; checks: { passed: boolean } };
  judgement?: { outcome: "win" | "loss" | "tie" };
}

/** The verdict, then one row per prompt. */
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
                  {headToHead && <td>{result.judgement ? t(`outcome.${result.judgement.outcome}`) : "—"}</td>}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
