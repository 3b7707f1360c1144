// The project's live stream (every job's status), reconnecting after drops with a new ticket.
import type { StreamMessage } from "@client";
import { streamUrl, type Session } from "./session";

/** Follow the project's stream until stop() is called; returns stop. */
export function followProject(
  session: Session,
  onMessage: (message: StreamMessage) => void,
  onReconnect: () => void,
): () => void {
  let stopped = false;
  let opened = false;
  let socket: WebSocket | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let delay = 500;

  const retry = (): void => {
    if (stopped) return;
    timer = setTimeout(() => void open(), delay);
    delay = Math.min(delay * 2, 15_000);
  };

  const open = async (): Promise<void> => {
    let url: URL;
    try {
      url = await streamUrl(session, "/v1/fine_tuning/events/stream");
    } catch {
      retry();
      return;
    }
    if (stopped) return;
    const ws = new WebSocket(url);
    socket = ws;
    ws.onopen = () => {
      delay = 500;
      // The stream is live-only: what changed while it was down comes from a fresh list.
      if (opened) onReconnect();
      opened = true;
    };
    ws.onmessage = (frame: MessageEvent) => {
      try {
        onMessage(JSON.parse(String(frame.data)) as StreamMessage);
      } catch {
        // A frame that is not JSON is skipped: the list is refreshed on the next job message.
      }
    };
    ws.onclose = (close: CloseEvent) => {
      if (socket !== ws || stopped) return;
      socket = null;
      if (close.code < 4400 || close.code >= 4500) retry();
    };
  };

  void open();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    socket?.close(1000);
    socket = null;
  };
}
