// The project's live stream (every job's snapshots), kept open across drops with a new ticket.
import { ServiceError, type StreamMessage } from "@client";
import { streamUrl, type Session } from "./session";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15_000;
// Three heartbeats (15 s apart) missed: the link is dead even if no close was reported.
const SILENCE_MS = 45_000;

export interface ProjectStream {
  /** Each message of the stream. */
  onMessage: (message: StreamMessage) => void;
  /** The stream is (again) open: what changed while it was not comes from a fresh list. */
  onOpen: () => void;
  /** The stream ended for good (a refused key): the list is no longer live. */
  onEnd: (reason: string) => void;
}

/** Follow the project's stream until the returned function is called. */
export function followProject(session: Session, handlers: ProjectStream): () => void {
  let stopped = false;
  let socket: WebSocket | null = null;
  let retry: ReturnType<typeof setTimeout> | null = null;
  let watchdog: ReturnType<typeof setTimeout> | null = null;
  let delay = FIRST_DELAY_MS;

  const quiet = (): void => {
    if (watchdog !== null) clearTimeout(watchdog);
    watchdog = null;
  };
  const end = (reason: string): void => {
    stopped = true;
    quiet();
    handlers.onEnd(reason);
  };
  const again = (): void => {
    if (stopped) return;
    retry = setTimeout(() => void open(), delay);
    delay = Math.min(delay * 2, MAX_DELAY_MS);
  };

  const open = async (): Promise<void> => {
    let url: URL;
    try {
      url = await streamUrl(session, "/v1/fine_tuning/events/stream");
    } catch (error) {
      // A key refused for a ticket will be refused again: only other failures are retried.
      if (error instanceof ServiceError && error.status >= 400 && error.status < 500 && error.status !== 429) {
        end(error.message);
      } else {
        again();
      }
      return;
    }
    if (stopped) return;
    const ws = new WebSocket(url);
    socket = ws;
    const watch = (): void => {
      quiet();
      watchdog = setTimeout(() => {
        if (socket !== ws || stopped) return;
        socket = null;
        ws.close(4000, "no message within the heartbeat window");
        again();
      }, SILENCE_MS);
    };
    ws.onopen = () => {
      watch();
      handlers.onOpen();
    };
    ws.onmessage = (frame: MessageEvent) => {
      if (socket !== ws || stopped) return;
      watch();
      delay = FIRST_DELAY_MS; // a message, not just an accepted connection, proves the link
      try {
        handlers.onMessage(JSON.parse(String(frame.data)) as StreamMessage);
      } catch {
        // A frame that is not JSON is skipped: the next open brings a fresh list.
      }
    };
    ws.onclose = (close: CloseEvent) => {
      if (socket !== ws || stopped) return;
      socket = null;
      quiet();
      if (close.code >= 4400 && close.code < 4500) end(close.reason || `closed with ${close.code}`);
      else again();
    };
  };

  void open();
  return () => {
    stopped = true;
    quiet();
    if (retry !== null) clearTimeout(retry);
    socket?.close(1000);
    socket = null;
  };
}
