// The signed-in key (kept in this tab's session storage only) and the clients bound to it.
import {
  createFineTuningHelpers,
  createRequest,
  ServiceError,
  type FineTuningHelpers,
  type ServiceRequest,
} from "@client";

const KEY = "fine-tuning-dashboard.api-key";

export interface Session {
  apiKey: string;
  request: ServiceRequest;
  helpers: FineTuningHelpers;
}

/** The session for a key, talking to the service that served this page; `onRefused` is told
 * when the service no longer accepts the key (revoked while the page was open). */
export function sessionFor(apiKey: string, onRefused?: () => void): Session {
  const options = { baseUrl: window.location.origin, apiKey };
  const request = createRequest(options);
  const guarded: ServiceRequest = async (method, path, body) => {
    try {
      return await request(method, path, body);
    } catch (error) {
      if (error instanceof ServiceError && error.status === 401) onRefused?.();
      throw error;
    }
  };
  return { apiKey, request: onRefused ? guarded : request, helpers: createFineTuningHelpers(options) };
}

/** The session kept in this tab, if any. */
export function restoreSession(onRefused: () => void): Session | null {
  const apiKey = sessionStorage.getItem(KEY);
  return apiKey ? sessionFor(apiKey, onRefused) : null;
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
