// Hash routes (#/jobs/ftjob-1): the service serves one page, so any API path keeps its own answers.
import { useEffect, useState } from "preact/hooks";

export type Route =
  | { page: "jobs" }
  | { page: "job"; id: string }
  | { page: "new"; model?: string }
  | { page: "models"; model?: string }
  | { page: "exit" };

/** The route a hash names; the jobs list for anything else. */
export function parseRoute(hash: string): Route {
  let parts: string[];
  try {
    parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  } catch {
    return { page: "jobs" }; // a malformed escape (%E0%A4%A) names no page
  }
  if (parts[0] === "jobs" && parts[1]) return { page: "job", id: parts[1] };
  // A model after the page's name preselects it (a checkpoint to try, or to train from).
  if (parts[0] === "new") return { page: "new", model: parts[1] };
  if (parts[0] === "models") return { page: "models", model: parts[1] };
  if (parts[0] === "exit") return { page: "exit" };
  return { page: "jobs" };
}

/** The hash of a route. */
export function href(route: Route): string {
  if (route.page === "job") return `#/jobs/${encodeURIComponent(route.id)}`;
  if ((route.page === "new" || route.page === "models") && route.model) {
    return `#/${route.page}/${encodeURIComponent(route.model)}`;
  }
  return `#/${route.page}`;
}

/** The current route, following the address bar. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    // Only "#/..." names a page: "#main" (the skip link) moves the focus and keeps the page.
    const follow = (): void => {
      const hash = window.location.hash;
      if (hash === "" || hash.startsWith("#/")) setRoute(parseRoute(hash));
    };
    window.addEventListener("hashchange", follow);
    return () => window.removeEventListener("hashchange", follow);
  }, []);
  return route;
}
