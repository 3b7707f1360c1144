// The loss/accuracy chart of a run (uPlot on a canvas), with a text summary for screen readers.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useT } from "../i18n";

export interface MetricsPoint {
  step: number;
  metrics: Record<string, number>;
}

// The series drawn, by the engine's metric names; accuracy has its own 0–1 axis.
const SERIES = [
  { key: "train_loss", label: "train_loss", stroke: "#1f5fbf", scale: "loss" },
  { key: "valid_loss", label: "valid_loss", stroke: "#b3261e", scale: "loss" },
  { key: "train_mean_token_accuracy", label: "train_accuracy", stroke: "#1e7b34", scale: "accuracy" },
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
          { scale: "loss", label: "loss" },
          { scale: "accuracy", label: "accuracy", side: 1, grid: { show: false } },
        ],
        series: [
          { label: t("common.step") },
          ...SERIES.map(({ label, stroke, scale }) => ({ label, stroke, scale, width: 2, spanGaps: true })),
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
    // The chart is built once; points arrive through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
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
      <div ref={box} role="img" aria-label={`${t("job.chart")}: ${summary}`} />
      <figcaption>{summary}</figcaption>
    </figure>
  );
}
