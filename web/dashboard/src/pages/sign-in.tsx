// Sign-in: an API key, checked against the service, then kept in this tab's session storage.
import { useState } from "preact/hooks";
import { describe } from "../components/common";
import { useT } from "../i18n";
import { keepSession, sessionFor } from "../session";

export function SignInPage({ onSignIn, refused }: { onSignIn: (apiKey: string) => void; refused: boolean }) {
  const t = useT();
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    const session = sessionFor(key.trim());
    try {
      await session.request("GET", "/v1/fine_tuning/jobs?limit=1");
      keepSession(session);
      onSignIn(session.apiKey);
    } catch (reason) {
      setError(describe(reason));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="narrow" aria-labelledby="signin-title">
      <h1 id="signin-title">{t("signin.title")}</h1>
      {refused && (
        <p class="error" role="alert">
          {t("signin.revoked")}
        </p>
      )}
      <p>{t("signin.intro")}</p>
      <form onSubmit={submit}>
        <label for="api-key">{t("signin.key")}</label>
        <input
          id="api-key"
          type="password"
          autocomplete="off"
          required
          value={key}
          onInput={(e) => setKey((e.target as HTMLInputElement).value)}
          aria-describedby={error ? "signin-error" : undefined}
        />
        <button type="submit" disabled={busy || !key.trim()}>
          {t("signin.submit")}
        </button>
        {error && (
          <p id="signin-error" class="error" role="alert">
            {t("signin.refused", { message: error })}
          </p>
        )}
      </form>
    </section>
  );
}
