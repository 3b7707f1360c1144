"""POST /v1/email/redact: the wire shape, offsets into the input and consistent placeholders."""

from __future__ import annotations

from tests.factories import assert_envelope, make_tenant


async def test_redact_returns_entities_with_offsets_into_the_input(client, database):
    tenant = await make_tenant(database)
    texts = [
        "Bonjour Madame Leclercq,\n\nRappelez-moi au 06 12 34 56 78 ou à j.roux@exemple.fr.\n\n"
        "Cordialement,\n\nJeanne Roux",
        "Mme Leclercq a réglé par virement (IBAN FR76 3000 6000 0112 3456 7890 189).",
    ]
    response = await client.post(
        "/v1/email/redact", headers=tenant.headers, json={"texts": texts, "language": "fr"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and len(body["data"]) == 2
    found = {}
    for text, item in zip(texts, body["data"], strict=True):
        for entity in item["entities"]:
            assert set(entity) == {"type", "start", "end", "placeholder"}
            found[text[entity["start"] : entity["end"]]] = (entity["type"], entity["placeholder"])
            assert entity["placeholder"] in item["text"]
    assert found == {
        "Leclercq": ("PERSON", "[NOM_1]"),
        "06 12 34 56 78": ("PHONE", "[TEL_1]"),
        "j.roux@exemple.fr": ("EMAIL", "[EMAIL_1]"),
        "Jeanne Roux": ("PERSON", "[NOM_2]"),
        "FR76 3000 6000 0112 3456 7890 189": ("IBAN", "[IBAN_1]"),
    }
    assert body["data"][1]["text"] == "Mme [NOM_1] a réglé par virement (IBAN [IBAN_1])."


async def test_redact_detects_the_language_and_refuses_bad_input(client, database):
    tenant = await make_tenant(database)
    response = await client.post(
        "/v1/email/redact",
        headers=tenant.headers,
        json={"texts": ["Dear Mr. Adams,\n\nSee you soon."]},
    )
    assert response.json()["data"][0]["text"] == "Dear Mr. [NOM_1],\n\nSee you soon."
    for body in (
        {"texts": []},
        {"texts": ["x"], "language": "de"},
        {"texts": ["x" * 100_001]},
        {"texts": ["x"], "extra": 1},
    ):
        assert_envelope(
            await client.post("/v1/email/redact", headers=tenant.headers, json=body), 400
        )
    assert_envelope(await client.post("/v1/email/redact", json={"texts": ["x"]}), 401)
