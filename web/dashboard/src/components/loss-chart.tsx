// The loss/accuracy chart of a run (uPlot on a canvas), with a text summary for screen readers.
import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useT } from "../i18n";

export interface MetricsPoint {
  step: number;
  metrics: Record<string, number>;
}

// The series drawn, by the engine's metric names; accuracy has its own 0–1 axis.
const SERIES = [
  { key: "train_loss", label: "chart.trainLoss", stroke: "#1f5fbf", scale: "loss" },
  { key: "valid_loss", label: "chart.validLoss", stroke: "#b3261e", scale: "loss" },
  { key: "train_mean_token_accuracy", label: "chart.trainAccuracy", stroke: "#1e7b34", scale: "accuracy" },
] as const;

function columns(points: MetricsPoint[]): uPlot.AlignedData {
  return [
    points.map((point) => point.step),
    ...SERIES.map(({ key }) => points.map((point) => point.metrics[key] ?? null)),
  ] as uPlot.AlignedData;
}

export function LossChart({ points }: { points: MetricsPoint[] }) {
  const t = useT();
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const width = (): number => Math.max(280, element.clientWidth);
    plot.current = new uPlot(
      {
        width: width(),
        height: 260,
        scales: { x: { time: false }, accuracy: { range: [0, 1] } },
        axes: [
          { label: t("common.step") },
          { scale: "loss", label: t("chart.loss") },
          { scale: "accuracy", label: t("chart.accuracy"), side: 1, grid: { show: false } },
        ],
        series: [
          { label: t("common.step") },
          ...SERIES.map(({ label, stroke, scale }) => ({ label: t(label), stroke, scale, width: 2, spanGaps: true })),
        ],
      },
      columns(points),
      element,
    );
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: width(), height: 260 }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // Built again only for a new language; points arrive through setData below.
  }, [t]);

  useEffect(() => {
    plot.current?.setData(columns(points));
  }, [points]);

  const last = points.at(-1)?.metrics.train_loss;
  const summary = points.length
    ? t("job.chartSummary", { count: points.length, loss: last === undefined ? "—" : last.toFixed(4) })
    : t("job.chartEmpty");
  return (
    <figure class="chart" data-points={points.length}>
      <div ref={box} role="img" aria-label={t("job.chart")} />
      <figcaption>{summary}</figcaption>
      <PointsTable points={points} />
    </figure>
  );
}

/** The chart's numbers as a table (for screen readers and copying), drawn only when opened. */
function PointsTable({ points }: { points: MetricsPoint[] }) {
  const t = useT();
  const [open, setOpen] = useState(false);
  return (
    <details onToggle={(e) => setOpen((e.currentTarget as HTMLDetailsElement).open)}>
      <summary>{t("chart.table")}</summary>
      {open && (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">{t("common.step")}</th>
                {SERIES.map(({ key, label }) => (
                  <th key={key} scope="col">
                    {t(label)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {points.map((point) => (
                <tr key={point.step}>
                  <td>{point.step}</td>
                  {SERIES.map(({ key }) => (
                    <td key={key}>{point.metrics[key]?.toFixed(4) ?? "—"}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </details>
  );
}
