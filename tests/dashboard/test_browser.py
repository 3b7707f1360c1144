"""The dashboard in a real browser (Debian's chromium driven by Playwright) against the real
server: its embedded worker trains the tiny model, and an OpenAI-wire double stands for the
provider being left. Every page is checked with axe-core (no serious or critical violation) and
photographed; `make screenshots` writes the photographs into the README's folder.

The dashboard is built by `make dashboard` and chromium installed by `make browser` (both run by
`make test`); the tests fail rather than skip without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from service.dashboard import BUILT_DIR
from tests.factories import chat_example, chat_file, jsonl
from tests.processes import REPO_ROOT, SHARED_DIR, Server, serve_keyed
from tests.upstream.accounts import history
from tests.upstream.openai_double import ThreadedDouble

MODEL = "tiny-chat"  # tests/tiny_model.py, offered by the local engine
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags of a browser on a machine without network: no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = REPO_ROOT / "web" / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO_ROOT / "web" / "dashboard" / "screenshots"
HISTORY = SHARED_DIR / "data" / "emails" / "history.jsonl"
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[Server, str]]:
    """The real server (SQLite, embedded worker, tiny model) with the provider double as
    `openai`, whose account already holds files and ended jobs; and an admin key."""
    if not (BUILT_DIR / "index.html").is_file() or not AXE.is_file():
        pytest.fail("the dashboard is not built: run `make dashboard`")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed: run `make browser` (as root) or apt-get it")
    root = tmp_path_factory.mktemp("dashboard")
    with ThreadedDouble() as provider:
        provider.call(history)
        with serve_keyed(
            root,
            f"sqlite+aiosqlite:///{root / 'service.db'}",
            tiny_model_dir.parent,
            log_level="warning",
            worker_poll_seconds="0.2",
            providers=json.dumps(
                [
                    {
                        "name": "openai",
                        "base_url": provider.url,
                        "api_key": provider.double.api_key,
                        "models": [{"id": "gpt-4o-mini", "shutdown_date": "2099-12-31"}],
                    }
                ]
            ),
            upstream_sync_running_seconds="0.2",
            upstream_sync_queued_seconds="0.2",
        ) as server_and_key:
            yield server_and_key


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, live) -> Iterator[Page]:
    """A new tab (its own session storage) that fails the test on a script error or a refused
    resource (a Content-Security-Policy refusal, say)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))

    def on_console(message: ConsoleMessage) -> None:
        # A refused API call is logged by the browser itself; the page shows it to the user.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console: {message.text}")

    tab.on("console", on_console)
    yield tab
    context.close()
    assert problems == []


@pytest.fixture
def api(live) -> Iterator[httpx.Client]:
    server, key = live
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=300
    ) as client:
        yield client


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[Page, str], None]:
    """Photograph a page: into the README's folder with FT_UPDATE_SCREENSHOTS=1, else aside."""
    folder = SCREENSHOTS if os.environ.get("FT_UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> None:
        page.screenshot(path=folder / f"{name}.png", full_page=True, animations="disabled")
        assert (folder / f"{name}.png").stat().st_size > 10_000

    return take


def assert_accessible(page: Page) -> None:
    """axe-core's rules on the page as it is: no serious or critical violation."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())  # run as the tester, not subject to the page's CSP
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [
        (v["id"], v["help"], [node["target"] for node in v["nodes"]][:3])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []


def sign_in(page: Page, live) -> None:
    server, key = live
    page.goto(server.url + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Fine-tuning jobs")).to_be_visible()


def all_events(api: httpx.Client, job_id: str) -> list[str]:
    """The job's whole stored log, oldest first."""
    ids: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1000, **({"after": after} if after else {})}
        page = api.get(f"/v1/fine_tuning/jobs/{job_id}/events", params=params).json()
        ids.extend(event["id"] for event in page["data"])
        if not page["has_more"]:
            return list(reversed(ids))
        after = page["data"][-1]["id"]


def points(page: Page) -> int:
    return int(page.locator("figure.chart").get_attribute("data-points") or 0)


def wait_for_more_points(page: Page, than: int) -> int:
    # Functions, not expression strings: the page's CSP forbids eval, and rightly.
    page.wait_for_function(
        "(n) => Number(document.querySelector('figure.chart')?.dataset.points ?? 0) > n",
        arg=than,
        timeout=WAIT_MS,
    )
    return points(page)


def logged_ids(page: Page) -> list[str]:
    return page.locator("[data-event]").evaluate_all("items => items.map(i => i.dataset.event)")


def test_sign_in_upload_train_watch_reload_pause_and_cancel(page, live, api, shots, tmp_path):
    server, _ = live
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert_accessible(page)
    shots(page, "sign-in")

    # A wrong key is refused on the page, and nothing is kept.
    page.get_by_label("API key").fill("sk-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("This key was refused")
    assert page.evaluate("sessionStorage.length") == 0
    sign_in(page, live)

    # Upload: 200 examples, 3 epochs of batch 1, so the run lasts long enough to watch.
    training = tmp_path / "support-emails.jsonl"
    training.write_bytes(jsonl([chat_example(i) for i in range(200)]))
    page.get_by_role("link", name="New job").click()
    page.get_by_label("Training file (JSONL)").set_input_files(training)
    page.get_by_label("Model", exact=True).fill(MODEL)
    # Checked for DPO, the chat file is refused line by line and cannot be trained...
    page.get_by_label("Method").select_option("dpo")
    page.get_by_role("button", name="Upload and check").click()
    report = page.locator("section.report")
    expect(report).to_have_attribute("data-valid", "false")
    expect(report.locator("details")).to_have_attribute("open", "")
    expect(report.locator("tbody tr").first).to_contain_text("needs the preference format")
    expect(page.get_by_role("button", name="Start training")).to_have_count(0)
    # ... and checked again, for supervised training, as soon as the method changes.
    page.get_by_label("Method").select_option("supervised")
    expect(report).to_have_attribute("data-valid", "true")
    expect(report.locator("[data-examples]")).to_have_attribute("data-examples", "200")
    page.get_by_label("Epochs").fill("3")
    page.get_by_label("Batch size").fill("1")
    # The bill follows the epochs: the check is asked again.
    expect(report.get_by_text("Billed tokens (3 epochs)")).to_be_visible()
    assert_accessible(page)
    shots(page, "new-job")
    page.get_by_role("button", name="Start training").click()

    # The job page: the chart grows from the stream.
    expect(page.get_by_role("heading", name="Event log")).to_be_visible()
    job_id = page.url.rsplit("/", 1)[-1]
    assert job_id.startswith("ftjob-")
    first = wait_for_more_points(page, 2)
    grown = wait_for_more_points(page, first)
    assert grown > first
    expect(page.locator("[data-status]")).to_have_attribute("data-status", "running")
    # The service's estimate, as a range: no charge on the local engine, minutes of compute.
    expect(page.locator("[data-estimate]")).to_contain_text("no charge")
    expect(page.locator("[data-estimate]")).to_contain_text("min")

    # Reload mid-run: the history and the stream give the whole log again, once each.
    page.reload()
    expect(page.get_by_role("heading", name="Event log")).to_be_visible()
    after_reload = wait_for_more_points(page, grown)
    assert after_reload > grown
    assert_accessible(page)
    shots(page, "job")

    page.get_by_role("button", name="Pause").click()
    expect(page.locator("[data-status]")).to_have_attribute(
        "data-status", "paused", timeout=WAIT_MS
    )
    # Paused, the run comes to rest (the step in flight may still log): the page then shows
    # exactly the stored log, in order, each event once, and a chart point for every step.
    metrics = f"/v1/fine_tuning/jobs/{job_id}/metrics"
    deadline = time.monotonic() + 30
    while True:
        steps = len(api.get(metrics).json()["data"])
        shown, stored, charted = logged_ids(page), all_events(api, job_id), points(page)
        assert len(shown) == len(set(shown)), "an event is shown twice"
        if (shown, charted) == (stored, steps) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert shown == stored, "the log on the page differs from the stored log"
    assert charted == steps >= after_reload

    # Resume, then cancel (with the confirmation the page asks for).
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("[data-status]")).not_to_have_attribute("data-status", "paused")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("[data-status]")).to_have_attribute(
        "data-status", "cancelled", timeout=WAIT_MS
    )
    assert api.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "cancelled"
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()

    # The list shows it, with its status, from the server's answer.
    page.get_by_role("link", name="Jobs").click()
    row = page.locator(f"tr[data-job='{job_id}']")
    expect(row).to_contain_text("cancelled")
    assert_accessible(page)


def _train_small_model(api: httpx.Client) -> str:
    file_id = api.post(
        "/v1/files",
        files={"file": ("small.jsonl", chat_file(12))},
        data={"purpose": "fine-tune"},
    ).json()["id"]
    job = api.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": MODEL,
            "training_file": file_id,
            "suffix": "support",
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}},
            },
        },
    ).json()
    return job["id"]


def test_jobs_list_is_live_and_two_models_are_compared(page, live, api, shots):
    sign_in(page, live)
    # A job created elsewhere appears in the open list and reaches its end without a reload.
    job_id = _train_small_model(api)
    row = page.locator(f"tr[data-job='{job_id}']")
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row).to_contain_text("succeeded", timeout=WAIT_MS)
    shots(page, "jobs")
    model = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()["fine_tuned_model"]
    expect(row).to_contain_text(model)

    # Its checkpoint goes to the playground from the job page.
    page.get_by_role("link", name=job_id).click()
    start_from = page.get_by_role("link", name="New job from it").first
    expect(start_from).to_have_attribute("href", re.compile(r"^#/new/ft%3Atiny-chat%3A"))
    page.get_by_role("link", name="Try in playground").first.click()
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    checkpoint = page.get_by_label("Model 1").input_value()
    assert checkpoint.startswith(f"ft:{MODEL}:") and ":ckpt-step-" in checkpoint

    # Base, fine-tuned model and checkpoint side by side.
    page.get_by_label("Model 2").fill(MODEL)
    page.get_by_label("Model 3").fill(model)
    page.get_by_label("Message", exact=True).fill("Écris un e-mail pour confirmer la réunion.")
    page.get_by_role("button", name="Send to all").click()
    for slot in range(3):
        answer = page.locator(f"section.answer[data-slot='{slot}']")
        expect(answer.locator(".answer-text")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("section.answer .error")).to_have_count(0)

    # An evaluation of the fine-tuned model against its base, judged by the base.
    page.get_by_label("Model evaluated").fill(model)
    page.get_by_label("Compared with").fill(MODEL)
    page.get_by_label("Judge model (optional)").fill(MODEL)
    page.get_by_label("Prompts (one per line)").fill(
        "Confirme la réunion de jeudi.\nRemercie le client pour sa commande."
    )
    page.get_by_role("button", name="Run the evaluation").click()
    evaluation = page.locator("section.evaluation")
    expect(evaluation).to_be_visible(timeout=WAIT_MS)
    expect(evaluation.locator("tbody tr")).to_have_count(2)
    expect(evaluation.get_by_text("Verdict")).to_be_visible()
    expect(evaluation.get_by_text("Remercie le client pour sa commande.")).to_be_visible()

    # Promotion of the checkpoint, then of the model, then a rollback to the checkpoint.
    page.get_by_label("Scope").fill("department:support")
    page.get_by_label("Model", exact=True).fill(checkpoint)
    page.get_by_role("button", name="Promote").click()
    scope_row = page.locator("tr", has_text="department:support")
    expect(scope_row).to_contain_text(checkpoint)
    page.get_by_label("Model", exact=True).fill(model)
    page.get_by_role("button", name="Promote").click()
    expect(scope_row).to_contain_text(model)
    page.once("dialog", lambda dialog: dialog.accept())  # going back is confirmed
    scope_row.get_by_role("button", name="Roll back").click()
    expect(scope_row).to_contain_text(checkpoint)
    history_list = page.locator("section[aria-labelledby='history-title'] li")
    expect(history_list).to_have_count(3)
    expect(page.get_by_text("Feedback loop")).to_be_visible()
    alias = api.get("/v1/email/aliases/department:support").json()
    assert alias["model"] == checkpoint
    assert_accessible(page)
    shots(page, "models")


def test_a_dataset_built_from_email_history(page, live, api, shots):
    sign_in(page, live)
    page.get_by_role("link", name="New job").click()
    page.get_by_label("Build from e-mail history").check()
    page.get_by_label("E-mail history (history.jsonl)").set_input_files(HISTORY)
    page.get_by_label("Model", exact=True).fill(MODEL)
    page.get_by_role("button", name="Build the dataset").click()
    dataset = page.locator("[data-dataset]")
    expect(dataset).to_be_visible(timeout=WAIT_MS)
    dataset_id = dataset.get_attribute("data-dataset")
    stored = api.get(f"/v1/email/datasets/{dataset_id}").json()
    report = stored["report"]
    expect(dataset.get_by_role("heading")).to_contain_text(
        f"{report['n_training']} training and {report['n_validation']} validation examples"
    )
    replaced = sum(report["redaction"]["replaced"].values())
    assert replaced > 0
    expect(dataset.locator("[data-redactions]")).to_have_attribute("data-redactions", str(replaced))
    expect(page.locator("section.report")).to_have_attribute("data-valid", "true")
    assert_accessible(page)
    shots(page, "new-job-from-emails")

    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_role("heading", name="Event log")).to_be_visible()
    job = api.get(f"/v1/fine_tuning/jobs/{page.url.rsplit('/', 1)[-1]}").json()
    assert job["training_file"] == stored["training_file"]
    assert job["validation_file"] == stored["validation_file"]
    # Built with personal data replaced: the training file holds placeholders, not the names.
    content = api.get(f"/v1/files/{stored['training_file']}/content").text
    assert "[NOM_1]" in content or "[EMAIL_1]" in content
    api.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")


def test_leaving_openai_inventory_import_record_retrain_compare(page, live, api, shots):
    sign_in(page, live)
    page.get_by_role("link", name="Leave OpenAI").click()
    page.get_by_role("button", name="List what the provider holds").click()
    counts = page.locator("[data-inventory]")
    expect(counts).to_contain_text("4 jobs (0 imported here), 3 fine-tuned models (0 recorded)")

    page.get_by_role("button", name="Import and record").click()
    expect(page.locator("[data-exit-status]")).to_have_attribute(
        "data-exit-status", "completed", timeout=WAIT_MS
    )
    expect(counts).to_contain_text("4 jobs (4 imported here), 3 fine-tuned models (3 recorded)")

    page.get_by_label("Local base model for re-training").fill(MODEL)
    inventory = api.get("/v1/providers/openai/inventory").json()
    # The old model whose job had a validation file: the record asked its prompts.
    validated = next(
        job
        for job in inventory["jobs"]
        if job["fine_tuned_model"] and ":support:" in job["fine_tuned_model"]
    )
    row = page.locator(f"tr[data-old-model='{validated['fine_tuned_model']}']")
    row.get_by_role("button", name="Re-train here").click()
    expect(row).to_contain_text("succeeded", timeout=WAIT_MS)
    row.get_by_role("button", name="Compare with the record").click()
    evaluation = page.locator("section.evaluation")
    expect(evaluation).to_be_visible(timeout=WAIT_MS)
    expect(evaluation.locator("tbody tr")).to_have_count(10)
    rerun = api.get(
        "/v1/fine_tuning/jobs", params={"metadata[rerun_of]": validated["imported_as"]}
    ).json()["data"][0]
    assert rerun["model"] == MODEL and rerun["status"] == "succeeded"
    assert_accessible(page)
    shots(page, "leave-openai")


def test_french_and_a_phone_sized_screen(page, live, api, shots):
    sign_in(page, live)
    page.get_by_label("Language").select_option("fr")
    expect(page.get_by_role("heading", name="Tâches d'affinage")).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "fr"
    page.reload()  # the choice and the session survive a reload
    expect(page.get_by_role("heading", name="Tâches d'affinage")).to_be_visible()
    assert_accessible(page)

    job_id = _train_small_model(api)
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("link", name=job_id).click()
    expect(page.get_by_role("heading", name="Journal")).to_be_visible()
    # Nothing wider than the screen but the tables' own scrolling boxes.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page)
    shots(page, "job-phone-fr")

    page.get_by_role("button", name="Se déconnecter").click()
    expect(page.get_by_role("heading", name="Connexion")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0

    # A key the service stops accepting (revoked) sends the tab back to the sign-in page.
    page.evaluate("sessionStorage.setItem('fine-tuning-dashboard.api-key', 'sk-revoked')")
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("n'accepte plus la clé")
    assert page.evaluate("sessionStorage.length") == 0
