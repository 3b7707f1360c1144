// The dashboard's shell: sign-in, navigation, language, and the page the hash names.
import { createContext } from "preact";
import { useCallback, useContext, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { applyLang, I18n, initialLang, translator, useT, type Lang } from "./i18n";
import { href, useRoute, type Route } from "./router";
import { endSession, restoreSession, sessionFor, type Session } from "./session";
import { ExitPage } from "./pages/exit";
import { JobPage } from "./pages/job";
import { JobsPage } from "./pages/jobs";
import { ModelsPage } from "./pages/models";
import { NewJobPage } from "./pages/new-job";
import { SignInPage } from "./pages/sign-in";

const SessionContext = createContext<Session | null>(null);

/** The signed-in session (pages are only rendered with one). */
export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("no session");
  return session;
}

const NAV: { route: Route; key: "nav.jobs" | "nav.new" | "nav.models" | "nav.exit" }[] = [
  { route: { page: "jobs" }, key: "nav.jobs" },
  { route: { page: "new" }, key: "nav.new" },
  { route: { page: "models" }, key: "nav.models" },
  { route: { page: "exit" }, key: "nav.exit" },
];

const PAGE_TITLES = {
  jobs: "nav.jobs",
  new: "nav.new",
  models: "nav.models",
  exit: "nav.exit",
} as const;

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case "job":
      return <JobPage key={route.id} id={route.id} />;
    case "new":
      return <NewJobPage key={route.model} model={route.model} />;
    case "models":
      return <ModelsPage key={route.model} model={route.model} />;
    case "exit":
      return <ExitPage />;
    default:
      return <JobsPage />;
  }
}

function Header({ lang, setLang, onSignOut }: {
  lang: Lang;
  setLang: (lang: Lang) => void;
  onSignOut: (() => void) | null;
}) {
  const t = useT();
  const route = useRoute();
  const current = route.page === "job" ? "jobs" : route.page;
  return (
    <header class="top">
      <a class="skip" href="#main">{t("app.skip")}</a>
      <p class="brand">{t("app.title")}</p>
      {onSignOut && (
        <nav aria-label={t("nav.label")}>
          <ul>
            {NAV.map(({ route: target, key }) => (
              <li key={key}>
                <a href={href(target)} aria-current={target.page === current ? "page" : undefined}>
                  {t(key)}
                </a>
              </li>
            ))}
          </ul>
        </nav>
      )}
      <div class="tools">
        <label>
          {t("lang.label")}{" "}
          <select value={lang} onChange={(e) => setLang((e.target as HTMLSelectElement).value as Lang)}>
            <option value="en" lang="en">English</option>
            <option value="fr" lang="fr">Français</option>
          </select>
        </label>
        {onSignOut && (
          <button type="button" class="secondary" onClick={onSignOut}>
            {t("signin.out")}
          </button>
        )}
      </div>
    </header>
  );
}

export function App() {
  const [lang, setLang] = useState<Lang>(initialLang);
  const [refused, setRefused] = useState(false);
  // A key revoked while the page is open: back to the sign-in page, which says why.
  const onRefused = useCallback(() => {
    endSession();
    setSession(null);
    setRefused(true);
  }, []);
  const [session, setSession] = useState<Session | null>(() => restoreSession(onRefused));
  const route = useRoute();
  const main = useRef<HTMLElement>(null);
  const i18n = useMemo(() => ({ lang, t: translator(lang) }), [lang]);

  useEffect(() => applyLang(lang), [lang]);

  // Each page has its own title (the tab, the history, a screen reader's first words).
  useEffect(() => {
    const t = i18n.t;
    const page = !session
      ? t("signin.title")
      : route.page === "job"
        ? t("job.title", { id: route.id })
        : t(PAGE_TITLES[route.page]);
    document.title = `${page} · ${t("app.title")}`;
  }, [i18n, route, session]);

  // A new page moves the focus to its heading, as a page load would for a screen reader.
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    const heading = main.current?.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus();
    } else {
      main.current?.focus();
    }
  }, [route]);

  const signOut = (): void => {
    endSession();
    setSession(null);
  };

  return (
    <I18n.Provider value={i18n}>
      <Header lang={lang} setLang={setLang} onSignOut={session ? signOut : null} />
      <main id="main" tabIndex={-1} ref={main}>
        {session ? (
          <SessionContext.Provider value={session}>
            <Page route={route} />
          </SessionContext.Provider>
        ) : (
          <SignInPage
            refused={refused}
            onSignIn={(apiKey) => {
              setRefused(false);
              setSession(sessionFor(apiKey, onRefused));
            }}
          />
        )}
      </main>
    </I18n.Provider>
  );
}
