// The signed-in key (kept in this tab's session storage only) and the clients bound to it.
import {
  createFineTuningHelpers,
  createRequest,
  type FineTuningHelpers,
  type ServiceRequest,
} from "@client";

const KEY = "fine-tuning-dashboard.api-key";

export interface Session {
  apiKey: string;
  request: ServiceRequest;
  helpers: FineTuningHelpers;
}

/** The session for a key, talking to the service that served this page. */
export function sessionFor(apiKey: string): Session {
  const options = { baseUrl: window.location.origin, apiKey };
  return { apiKey, request: createRequest(options), helpers: createFineTuningHelpers(options) };
}

/** The session kept in this tab, if any. */
export function restoreSession(): Session | null {
  const apiKey = sessionStorage.getItem(KEY);
  return apiKey ? sessionFor(apiKey) : null;
}

/** Keep the key for this tab (session storage: gone when the tab closes). */
export function keepSession(session: Session): void {
  sessionStorage.setItem(KEY, session.apiKey);
}

/** Forget the key. */
export function endSession(): void {
  sessionStorage.removeItem(KEY);
}

/** A URL of the service's WebSocket stream, opened with a single-use ticket (never the key). */
export async function streamUrl(
  session: Session,
  path: string,
  params: Record<string, string | null | undefined> = {},
): Promise<URL> {
  const { ticket } = await session.request<{ ticket: string }>("POST", "/v1/fine_tuning/stream_tickets");
  const url = new URL(path, window.location.origin);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("ticket", ticket);
  for (const [name, value] of Object.entries(params)) {
    if (value != null) url.searchParams.set(name, value);
  }
  return url;
}
