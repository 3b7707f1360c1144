"""Writing a mail as the model was trained: the request redacted, the answer restored, signed."""

from __future__ import annotations

from service.studio.compose import restore
from service.studio.prompts import SYSTEM_PROMPTS
from tests.factories import assert_envelope, make_tenant

BASE = "gpt-4o-mini-2024-07-18"


def test_restore_puts_values_back_and_signs_below_the_closing():
    answer = (
        "Remerciements\n\nBonjour M. [NOM_1],\n\nMerci pour votre commande. [NOM_2] vous "
        "appellera au [TEL_1].\n\nCordialement,\n\n[NOM_3]\nService commercial"
    )
    text = restore(answer, {"[NOM_1]": "Okafor", "[TEL_1]": "06 12 34 56 78"}, "Romain Tessereau")
    assert "Bonjour M. Okafor," in text and "au 06 12 34 56 78." in text
    assert text.endswith("Cordialement,\n\nRomain Tessereau\nService commercial")
    assert "[NOM_2] vous appellera" in text  # a name above the closing is not the sender's
    assert restore(answer, {}, None) == answer


async def test_compose_redacts_the_request_and_restores_the_answer(client, database):
    tenant = await make_tenant(database)
    response = await client.post(
        "/v1/email/compose",
        headers=tenant.headers,
        json={
            "model": BASE,
            "context": "Remercier M. Okafor pour sa commande ; il est joignable au 06 12 34 56 78.",
            "category": "remerciement",
            "department": "sales",
        },
    )
    assert response.status_code == 200, response.text
    mail = response.json()
    assert mail["object"] == "email.composition" and mail["language"] == "fr"
    system, user = mail["messages"]
    assert system["content"] == SYSTEM_PROMPTS["sales"]["fr"]
    assert user["content"] == (
        "Écrire un email remerciement pour: Remercier M. [NOM_1] pour sa commande ; "
        "il est joignable au [TEL_1]."
    )
    # The test engine echoes the request: the values are back in what the caller gets.
    assert "M. Okafor" in mail["text"] and "06 12 34 56 78" in mail["text"]
    assert mail["restored"] == ["[NOM_1]", "[TEL_1]"]
    assert mail["checks"]["no_placeholder_left"] and not mail["checks"]["greeting"]


async def test_compose_refuses_what_it_cannot_do(client, database):
    tenant = await make_tenant(database)
    unknown = await client.post(
        "/v1/email/compose",
        headers=tenant.headers,
        json={"model": "no-such-model", "context": "Relancer le client", "category": "relance"},
    )
    assert assert_envelope(unknown, 404)["code"] == "model_not_found"
    missing = await client.post(
        "/v1/email/compose", headers=tenant.headers, json={"model": BASE, "context": "x"}
    )
    assert assert_envelope(missing, 400)["param"] == "category"
