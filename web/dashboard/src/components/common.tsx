// Small pieces every page uses: errors, status badges, async loading.
import type { ComponentChildren, DdHTMLAttributes } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import { ServiceError, type JobStatus } from "@client";
import { useT } from "../i18n";

/** The statuses a job ends in. */
export const FINAL_STATUSES: ReadonlySet<JobStatus> = new Set<JobStatus>(["succeeded", "failed", "cancelled"]);

/** An error as a sentence: the service's message when it sent one. */
export function describe(error: unknown): string {
  if (error instanceof ServiceError) return `${error.message} (${error.status})`;
  return error instanceof Error ? error.message : String(error);
}

/** An error shown to everyone, and announced to screen readers. */
export function ErrorNote({ error }: { error: unknown }) {
  const t = useT();
  if (error == null) return null;
  return (
    <p class="error" role="alert">
      {t("common.error", { message: describe(error) })}
    </p>
  );
}

/** A job's status, in words and colour (never colour alone). */
export function StatusBadge({ status }: { status: JobStatus }) {
  const t = useT();
  return <span class={`badge status-${status}`}>{t(`status.${status}`)}</span>;
}

export interface Loaded<T> {
  data: T | null;
  error: unknown;
  loading: boolean;
  reload: () => void;
  update: (change: (data: T | null) => T) => void;
}

/** Load something once (and on reload()), keeping the last answer while reloading. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [round, setRound] = useState(0);
  useEffect(() => {
    let live = true;
    setLoading(true);
    load()
      .then((value) => live && (setData(value), setError(null)))
      .catch((reason: unknown) => live && setError(reason))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
    // `load` is new at each render: `deps` say when it means something new.
  }, [round, ...deps]);
  const reload = useCallback(() => setRound((n) => n + 1), []);
  const update = useCallback((change: (data: T | null) => T) => setData(change), []);
  return { data, error, loading, reload, update };
}

/** Run an action, keeping its pending state and error for the form that started it. */
export function useAction(): {
  busy: boolean;
  error: unknown;
  run: <T>(action: () => Promise<T>) => Promise<T | undefined>;
} {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = useCallback(async <T,>(action: () => Promise<T>) => {
    setBusy(true);
    setError(null);
    try {
      return await action();
    } catch (reason) {
      setError(reason);
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, run };
}

/** One term of a `dl.facts` and its value; other props (data-*, aria-live) go on the value. */
export function Fact({ label, children, ...value }: { label: ComponentChildren } & DdHTMLAttributes<HTMLElement>) {
  return (
    <div>
      <dt>{label}</dt>
      <dd {...value}>{children}</dd>
    </div>
  );
}
