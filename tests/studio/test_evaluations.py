"""Evaluations: the scoring rules, and POST /v1/email/evaluations against a tiny local model,
another model and a file of recorded answers."""

from __future__ import annotations

import json

import pytest

from service.engines.local.generator import without_nul
from service.studio.scoring import Item, check, outcome, rouge_l, summarize
from tests.engines.local_jobs import local_engine
from tests.factories import assert_envelope, make_tenant, upload
from tests.fake_engine import fake_engines

EVALUATIONS = "/v1/email/evaluations"
FRENCH = Item(messages=[{"role": "user", "content": "Écrire un email de relance pour: facture"}])
GOOD = (
    "Relance facture F-12\n\nBonjour Madame [NOM_1],\n\nSauf erreur de notre part, la facture "
    "F-12 reste impayée. Pourriez-vous nous indiquer la date de règlement prévue ?\n\n"
    "Bien cordialement,\n\n[NOM_2]"
)
SIGNED = GOOD.replace("[NOM_2]", "Julien").replace(" [NOM_1]", "")


def test_checks_find_greeting_closing_language_placeholders_and_leaks():
    item = Item(messages=[{"role": "user", "content": "Relance Mme [NOM_1] pour la facture F-12."}])
    good = check(GOOD, item)
    assert good.language and good.greeting and good.closing
    assert not good.no_placeholder_left  # [NOM_2] is not in the prompt; [NOM_1] is
    assert good.placeholders == ["[NOM_2]"]
    assert check(GOOD.replace("[NOM_2]", "Julien"), item).passed
    english = check("Dear Ms Smith,\n\nPlease pay the invoice.\n\nKind regards,\n\nJulien", item)
    assert not english.language and english.detected_language == "en"
    # A mail without a subject: its first paragraph is the greeting, not a subject line.
    no_subject = check(
        "Bonjour Madame,\n\nMerci de régler la facture.\n\nCordialement,\n\nJulien", item
    )
    assert no_subject.greeting and no_subject.closing
    curt = check("facture impayée, merci de payer", item)
    assert not curt.greeting and not curt.closing
    leak = check(GOOD.replace("[NOM_2]", "Julien Marsac"), item, personal_values={"Julien Marsac"})
    assert not leak.no_training_personal_data and leak.leaked == ["Julien Marsac"]


def test_rouge_l_and_the_swapped_judgement():
    assert (
        rouge_l("Bonjour Madame, la commande est prête.", "Bonjour Madame, la commande est prête.")
        == 1
    )
    assert (
        0
        < rouge_l("Bonjour, votre commande est prête", "Bonjour Madame, la commande est prête")
        < 1
    )
    assert rouge_l("", "x") == 0
    assert outcome(1, 2) == "win" and outcome(2, 1) == "loss"
    assert outcome(1, 1) == outcome(2, 2) == outcome(None, 2) == "tie"  # position bias cancels


def test_the_verdict_asks_for_no_worse_than_the_comparison():
    def result(passed: bool, rouge: float, judged: str) -> dict:
        return {
            "success": True,
            "latency_ms": 10.0,
            "rouge_l": rouge,
            "checks": {
                k: passed
                for k in (
                    "language",
                    "greeting",
                    "closing",
                    "no_placeholder_left",
                    "no_training_personal_data",
                    "passed",
                )
            },
            "compare": {"checks": {"passed": True}, "rouge_l": 0.3},
            "judgement": {"outcome": judged},
        }

    better = summarize([result(True, 0.5, "win"), result(True, 0.4, "tie")], {"model": 1.0})
    assert better["verdict"] == {"passed": True, "reasons": []}
    assert better["head_to_head"] == {"wins": 1, "losses": 0, "ties": 1, "win_rate": 0.75}
    worse = summarize([result(False, 0.1, "loss")], {"model": 2.0, "compare": 1.0})
    assert not worse["verdict"]["passed"] and len(worse["verdict"]["reasons"]) == 4


async def test_evaluate_against_recorded_answers_with_a_judge(client, database):
    tenant = await make_tenant(database)
    prompts = ["Écrire un email de relance pour: facture F-12", "Write an email for: a meeting"]
    # A recorded-answers file, as the provider exit writes one: the prompt, then the answer.
    rows = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": SIGNED}]}
        for p in prompts * 5
    ]
    recorded = await upload(client, tenant, "\n".join(map(json.dumps, rows)).encode())
    assert recorded.status_code == 200, recorded.text
    response = await client.post(
        EVALUATIONS,
        headers=tenant.headers,
        json={
            "model": "gpt-4o-mini-2024-07-18",
            "prompts": prompts,
            "compare_to": {"file_id": recorded.json()["id"]},
            "judge": "gpt-4o-mini",
        },
    )
    assert response.status_code == 200, response.text
    evaluation = response.json()
    assert evaluation["status"] == "completed" and evaluation["object"] == "email.evaluation"
    summary = evaluation["summary"]
    assert summary["test_count"] == summary["success_count"] == 2
    assert summary["latency_ms"]["p50"] >= 0
    results = evaluation["results"]
    assert [r["prompt"] for r in results] == prompts
    assert all(r["response"].startswith("echo: ") for r in results)
    assert all(r["compare"]["response"] == SIGNED for r in results)
    # The echo judge never prefers one answer in both orders: ties only.
    assert summary["head_to_head"] == {"wins": 0, "losses": 0, "ties": 2, "win_rate": 0.5}
    assert summary["compare"]["checks_passed"] == 0.5  # the French record passes, not the English
    assert summary["checks_passed"] == 0
    assert summary["verdict"]["passed"] is False

    again = (await client.get(f"{EVALUATIONS}/{evaluation['id']}", headers=tenant.headers)).json()
    assert again == evaluation
    listed = (await client.get(EVALUATIONS, headers=tenant.headers)).json()["data"]
    assert [e["id"] for e in listed] == [evaluation["id"]] and listed[0]["results"] is None
    other = await make_tenant(database, "other")
    assert_envelope(
        await client.get(f"{EVALUATIONS}/{evaluation['id']}", headers=other.headers), 404
    )


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-4o-mini", "prompts": []},
        {"model": "gpt-4o-mini", "prompts": ["x"], "file_id": "file-x"},
        {"model": "gpt-4o-mini", "prompts": ["x"], "judge": "gpt-4o-mini"},
        {"model": "gpt-4o-mini", "prompts": ["x"], "compare_to": {"model": "a", "file_id": "b"}},
    ],
)
async def test_bad_evaluation_requests(client, database, body):
    tenant = await make_tenant(database)
    assert_envelope(await client.post(EVALUATIONS, headers=tenant.headers, json=body), 400)
    unknown = await client.post(
        EVALUATIONS, headers=tenant.headers, json={"model": "ft:nope", "prompts": ["x"]}
    )
    assert_envelope(unknown, 404)
    assert (await client.get(EVALUATIONS, headers=tenant.headers)).json()["data"] == []


class TestLocalModel:
    @pytest.fixture
    def engines(self, settings, tiny_model_dir):
        return fake_engines(local_engine(settings, tiny_model_dir.parent))

    async def test_a_tiny_local_model_gets_answers_and_a_heldout_loss(self, client, database):
        tenant = await make_tenant(database)
        prompts = [
            {
                "prompt": "Écrire un email de remerciement pour: une commande",
                "reference": GOOD,
                "language": "fr",
            },
            {"prompt": "Écrire un email de relance pour: une facture", "reference": GOOD},
        ]
        response = await client.post(
            EVALUATIONS,
            headers=tenant.headers,
            json={
                "model": "tiny-chat",
                "prompts": prompts,
                "max_tokens": 12,
                "compare_to": {"model": "gpt-4o-mini"},
            },
        )
        assert response.status_code == 200, response.text
        summary = response.json()["summary"]
        assert summary["success_count"] == 2
        assert summary["heldout_loss"] > 0  # the fake engine (a provider) gives no loss
        assert summary["compare"]["heldout_loss"] is None
        assert summary["rouge_l"] is not None

    async def test_the_tiny_model_judges_its_own_answers(self, client, database):
        tenant = await make_tenant(database)
        response = await client.post(
            EVALUATIONS,
            headers=tenant.headers,
            json={
                "model": "tiny-chat",
                "prompts": ["Confirme la réunion de jeudi.", "Remercie le client."],
                "compare_to": {"model": "tiny-chat"},
                "judge": "tiny-chat",
                "max_tokens": 40,
            },
        )
        assert response.status_code == 200, response.text
        evaluation = response.json()
        assert evaluation["status"] == "completed", evaluation["error"]
        assert (
            sum(evaluation["summary"]["head_to_head"][k] for k in ("wins", "losses", "ties")) == 2
        )


def test_a_decoded_nul_byte_is_dropped_from_answers(tiny_model_dir):
    """An undertrained byte-level model can emit byte 0; the answer (then sent to a judge, stored
    in PostgreSQL, returned as JSON) must not carry it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    nul = tokenizer.convert_tokens_to_ids("Ā")  # byte-level BPE's name for byte 0
    assert tokenizer.decode([nul]) == "\x00"
    assert without_nul(tokenizer.decode([nul, *tokenizer.encode("Bonjour")])) == "Bonjour"
