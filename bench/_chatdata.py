"""Deterministic synthetic training data: French and English business-email chat examples.

`write_chat_jsonl(path, n, seed)` writes n supervised examples (system + user + assistant email),
about 15% with a second turn (a revision request, the first answer sometimes at weight 0) and
about 2% with a tool call (order lookup) before the email. Lengths vary from about 100 to 600
o200k tokens per example, a few multi-turn ones more. Same (n, seed): byte-identical file.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from pathlib import Path
from typing import Any

__all__ = ["write_chat_jsonl"]

_ID_ALPHABET = string.ascii_letters + string.digits

COMPANIES = [
    "Duval & Fils", "Transports Morel", "Atelier Lefèvre", "Boulangeries Girard", "Nordica SAS",
    "Helios Conseil", "Mercier Logistique", "Brightwater Ltd", "Oakridge Supplies",
    "Kestrel Analytics", "Pinecrest Foods", "Harbor & Vine", "Lumen Imprimerie", "Soleva",
    "Groupe Arnaud", "Vertigo Sports", "Bluefield Partners", "Cobalt Systems",
]
FIRST_NAMES = [
    "Camille", "Julien", "Sophie", "Thomas", "Claire", "Nicolas", "Amélie", "Hugo", "Léa",
    "Romain", "Emma", "Oliver", "Grace", "Daniel", "Priya", "Samuel", "Chloé", "Mathis",
]
LAST_NAMES = [
    "Durand", "Martin", "Bernard", "Petit", "Robert", "Richard", "Moreau", "Laurent", "Okafor",
    "Fischer", "Nguyen", "Smith", "Johnson", "Walker", "Rossi", "Garcia", "Dubois", "Lambert",
]
PRODUCTS_FR = [
    "chaises de bureau", "cartons d'expédition", "imprimantes laser", "cartouches d'encre",
    "tables pliantes", "écrans 27 pouces", "casques audio", "palettes de papier A4",
]
PRODUCTS_EN = [
    "office chairs", "shipping boxes", "laser printers", "ink cartridges", "folding tables",
    "27-inch monitors", "headsets", "pallets of A4 paper",
]
DAYS_FR = ["lundi", "mardi", "mercredi", "jeudi", "vendredi"]
DAYS_EN = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
MONTHS_FR = ["janvier", "février", "mars", "avril", "mai", "juin", "septembre", "octobre"]
MONTHS_EN = ["January", "February", "March", "April", "May", "June", "September", "October"]

SYSTEM_FR = [
    "Tu es l'assistant de rédaction du service {dept} de {company}. Tu rédiges des emails "
    "professionnels en français, courtois et précis, signés au nom de {signer}.",
    "Tu aides {signer}, {role} chez {company}, à répondre à ses emails. Ton : professionnel, "
    "chaleureux, sans jargon. Vouvoie toujours le destinataire.",
    "Rédige des emails pour {company}. Respecte la charte : phrases courtes, une idée par "
    "paragraphe, formule de politesse adaptée au destinataire.",
]
SYSTEM_EN = [
    "You are the writing assistant of the {dept} team at {company}. Write professional, "
    "courteous and precise emails in English, signed by {signer}.",
    "You help {signer}, {role} at {company}, answer business email. Tone: professional, warm, "
    "no jargon. Keep it concise.",
    "Draft emails on behalf of {company}. House style: short sentences, one idea per paragraph, "
    "a closing suited to the recipient.",
]
GUIDELINES_FR = [
    "N'invente jamais de montant ni de date qui ne figure pas dans la demande.",
    "Termine par une proposition d'action claire pour le destinataire.",
    "Si le client est mécontent, commence par reconnaître le désagrément.",
    "Mentionne le numéro de dossier dans l'objet de l'email.",
    "Évite les formules trop familières comme « Salut » ou « Bisous ».",
]
GUIDELINES_EN = [
    "Never invent an amount or a date that is not in the request.",
    "End with a clear next step for the recipient.",
    "If the customer is unhappy, start by acknowledging the inconvenience.",
    "Put the case number in the subject line.",
    "Avoid overly casual phrases such as 'Hey' or 'Cheers mate'.",
]
DEPTS_FR = ["commercial", "client", "comptabilité", "logistique", "ressources humaines"]
DEPTS_EN = ["sales", "customer care", "accounts", "logistics", "human resources"]
ROLES_FR = ["responsable commerciale", "chargé de clientèle", "comptable", "directeur logistique"]
ROLES_EN = ["sales manager", "account manager", "accountant", "head of logistics"]

# topic: (request, subject, opening sentences, body sentences), per language.
TOPICS_FR: list[tuple[str, str, list[str], list[str]]] = [
    (
        "remercie {title} {last} pour sa commande de {qty} {product} (commande {order}) et "
        "confirme la livraison le {day} {date}",
        "Confirmation de votre commande {order}",
        [
            "Nous vous remercions pour votre commande de {qty} {product}, enregistrée sous la "
            "référence {order}.",
            "Votre commande {order} de {qty} {product} a bien été prise en compte.",
        ],
        [
            "La livraison est prévue le {day} {date} entre 9 h et 12 h à l'adresse indiquée.",
            "Le montant total s'élève à {amount} € TTC, payable à réception de la facture.",
            "Notre transporteur vous contactera la veille pour confirmer le créneau.",
            "Vous pouvez suivre l'acheminement depuis votre espace client.",
            "En cas d'absence, un avis de passage vous sera laissé.",
        ],
    ),
    (
        "informe {title} {last} que la livraison de la commande {order} est retardée de {days} "
        "jours à cause d'une rupture chez notre fournisseur",
        "Retard de livraison – commande {order}",
        [
            "Nous sommes au regret de vous informer que la livraison de votre commande {order} "
            "aura {days} jours de retard.",
            "Je vous écris au sujet de votre commande {order}, dont la livraison est décalée.",
        ],
        [
            "Ce retard est dû à une rupture de stock chez notre fournisseur de {product}.",
            "Nous avons obtenu un nouveau créneau de livraison le {day} {date}.",
            "Pour compenser ce désagrément, nous vous offrons les frais de port.",
            "Si ce délai ne vous convient pas, vous pouvez annuler sans frais.",
            "Nous mettons tout en œuvre pour que cela ne se reproduise pas.",
        ],
    ),
    (
        "relance {title} {last} pour la facture {order} de {amount} € arrivée à échéance il y a "
        "{days} jours, sur un ton cordial",
        "Relance – facture {order}",
        [
            "Sauf erreur de notre part, la facture {order} d'un montant de {amount} € reste "
            "impayée à ce jour.",
            "Nous nous permettons de revenir vers vous au sujet de la facture {order}.",
        ],
        [
            "Son échéance était fixée il y a {days} jours.",
            "Vous trouverez une copie de la facture en pièce jointe.",
            "Le règlement peut être effectué par virement sur le compte indiqué.",
            "Si le paiement a été fait entre-temps, merci de ne pas tenir compte de ce message.",
            "Notre service comptable reste à votre disposition pour tout échéancier.",
        ],
    ),
    (
        "propose à {title} {last} une réunion le {day} {date} à {hour} h pour présenter notre "
        "offre de renouvellement de contrat",
        "Proposition de rendez-vous – renouvellement de contrat",
        [
            "Votre contrat arrive à échéance le mois prochain et nous souhaitons vous présenter "
            "nos nouvelles conditions.",
            "Je vous propose que nous fassions le point sur votre contrat lors d'un rendez-vous.",
        ],
        [
            "Seriez-vous disponible le {day} {date} à {hour} h, dans nos locaux ou en visio ?",
            "La réunion durera environ quarante-cinq minutes.",
            "Nous aborderons les volumes de l'année écoulée et vos besoins pour la suivante.",
            "Je joindrai une proposition tarifaire détaillée avant notre échange.",
            "Si ce créneau ne vous convient pas, n'hésitez pas à m'en proposer un autre.",
        ],
    ),
    (
        "répond à la réclamation de {title} {last} (ticket {ticket}) : {qty} {product} sont "
        "arrivés endommagés",
        "Votre réclamation {ticket}",
        [
            "Nous avons bien reçu votre réclamation concernant les {product} endommagés et vous "
            "prions de nous en excuser.",
            "Je fais suite à votre message au sujet de la livraison abîmée (ticket {ticket}).",
        ],
        [
            "Un remplacement des {qty} articles vous sera expédié sous {days} jours ouvrés.",
            "Il n'est pas nécessaire de nous retourner les articles endommagés.",
            "Nous avons signalé l'incident à notre transporteur.",
            "Un avoir de {amount} € peut vous être proposé si vous préférez.",
            "Votre satisfaction reste notre priorité.",
        ],
    ),
]
TOPICS_EN: list[tuple[str, str, list[str], list[str]]] = [
    (
        "thank {title} {last} for their order of {qty} {product} (order {order}) and confirm "
        "delivery on {day} {date}",
        "Your order {order} is confirmed",
        [
            "Thank you for your order of {qty} {product}, reference {order}.",
            "We have received your order {order} for {qty} {product}.",
        ],
        [
            "Delivery is scheduled for {day} {date} between 9am and noon.",
            "The total comes to £{amount} including VAT, payable on receipt of the invoice.",
            "Our carrier will call the day before to confirm the time slot.",
            "You can track the shipment from your customer portal.",
            "If nobody is available, the driver will leave a delivery notice.",
        ],
    ),
    (
        "let {title} {last} know that order {order} is delayed by {days} days because our "
        "supplier ran out of stock",
        "Delivery delay – order {order}",
        [
            "I am sorry to let you know that your order {order} will arrive {days} days late.",
            "I am writing about your order {order}, whose delivery has been pushed back.",
        ],
        [
            "The delay is caused by a shortage of {product} at our supplier.",
            "We have secured a new delivery slot on {day} {date}.",
            "To make up for the inconvenience, shipping is on us.",
            "If the new date does not work for you, you can cancel free of charge.",
            "We are taking steps to make sure this does not happen again.",
        ],
    ),
    (
        "remind {title} {last} politely that invoice {order} for £{amount} is {days} days "
        "overdue",
        "Reminder – invoice {order}",
        [
            "Our records show that invoice {order} for £{amount} is still outstanding.",
            "I am following up on invoice {order}.",
        ],
        [
            "It was due {days} days ago.",
            "Please find a copy of the invoice attached.",
            "Payment can be made by bank transfer to the account shown on the invoice.",
            "If you have already paid, please disregard this message.",
            "Our accounts team is happy to discuss a payment plan.",
        ],
    ),
    (
        "suggest a meeting with {title} {last} on {day} {date} at {hour}:00 to present our "
        "contract renewal offer",
        "Meeting request – contract renewal",
        [
            "Your contract ends next month and we would like to walk you through the new terms.",
            "I would like to set up a meeting to review your contract.",
        ],
        [
            "Would {day} {date} at {hour}:00 work for you, either at our office or online?",
            "The meeting should take about forty-five minutes.",
            "We will go over last year's volumes and your needs for the coming year.",
            "I will send a detailed price proposal ahead of the meeting.",
            "If that time does not suit you, please suggest another one.",
        ],
    ),
    (
        "answer the complaint from {title} {last} (ticket {ticket}): {qty} {product} arrived "
        "damaged",
        "Your complaint {ticket}",
        [
            "Thank you for reporting the damaged {product}; please accept our apologies.",
            "I am following up on your message about the damaged delivery (ticket {ticket}).",
        ],
        [
            "A replacement for the {qty} items will ship within {days} working days.",
            "There is no need to return the damaged items.",
            "We have reported the incident to our carrier.",
            "If you prefer, we can issue a credit note of £{amount}.",
            "Your satisfaction remains our priority.",
        ],
    ),
]
REVISIONS_FR = [
    "Peux-tu le rendre plus court ?",
    "Rends-le un peu plus formel, s'il te plaît.",
    "Ajoute une phrase pour proposer un appel téléphonique.",
    "Le ton est trop sec, adoucis-le.",
]
REVISIONS_EN = [
    "Can you make it shorter?",
    "Please make it a little more formal.",
    "Add a sentence offering a phone call.",
    "The tone is too blunt; soften it.",
]
GENERIC_FR = [
    "Nous restons bien entendu à votre écoute pour adapter ces modalités à vos contraintes.",
    "Votre interlocuteur habituel, {signer}, suit personnellement ce dossier.",
    "Pour rappel, nos bureaux sont ouverts du lundi au vendredi de 8 h 30 à 18 h.",
    "Les conditions générales de vente applicables sont disponibles sur notre site.",
    "Nous vous confirmerons chaque étape par email afin que vous puissiez vous organiser.",
    "Ce dossier porte la référence {ticket} ; merci de la rappeler dans vos échanges.",
    "Nous avons informé notre service {dept}, qui se tient prêt à intervenir si nécessaire.",
    "Vous recevrez un récapitulatif détaillé par courrier dans les prochains jours.",
    "Nous tenons à vous remercier pour la qualité de nos échanges depuis le début de l'année.",
    "Si vous le souhaitez, nous pouvons aussi organiser une visite de notre entrepôt.",
]
GENERIC_EN = [
    "We are of course happy to adjust these arrangements to suit your constraints.",
    "Your usual contact, {signer}, is personally following this case.",
    "As a reminder, our offices are open Monday to Friday from 8:30am to 6pm.",
    "Our terms and conditions of sale are available on our website.",
    "We will confirm each step by email so that you can plan ahead.",
    "This case is logged under reference {ticket}; please quote it in any reply.",
    "Our {dept} team has been informed and is ready to step in if needed.",
    "You will receive a detailed summary by post in the coming days.",
    "We would like to thank you for the quality of our exchanges since the start of the year.",
    "If you wish, we can also arrange a visit to our warehouse.",
]
EXTRA_FR = [
    "Je reste joignable par téléphone pour en parler de vive voix si vous le souhaitez.",
    "N'hésitez pas à me faire part de toute question.",
    "Je vous remercie de votre confiance et de votre compréhension.",
]
EXTRA_EN = [
    "I am happy to discuss this over the phone if that is easier.",
    "Please let me know if you have any questions.",
    "Thank you for your understanding and for your continued trust.",
]
ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order_status",
        "description": "Look up the status and expected delivery date of a customer order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "description": "e.g. CMD-12345"}},
            "required": ["order_id"],
        },
    },
}
CUSTOMER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_customer",
        "description": "Return a customer's account details by email address.",
        "parameters": {
            "type": "object",
            "properties": {"email": {"type": "string"}},
            "required": ["email"],
        },
    },
}


class _Writer:
    """Builds examples from one random generator, so that the output depends on the seed only."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def slots(self, fr: bool) -> dict[str, Any]:
        r = self.rng
        return {
            "company": r.choice(COMPANIES),
            "signer": f"{r.choice(FIRST_NAMES)} {r.choice(LAST_NAMES)}",
            "dept": r.choice(DEPTS_FR if fr else DEPTS_EN),
            "role": r.choice(ROLES_FR if fr else ROLES_EN),
            "title": r.choice(["M.", "Mme"] if fr else ["Mr", "Ms", "Dr"]),
            "last": r.choice(LAST_NAMES),
            "qty": r.randint(2, 250),
            "product": r.choice(PRODUCTS_FR if fr else PRODUCTS_EN),
            "order": f"{'CMD' if fr else 'ORD'}-{r.randint(10000, 99999)}",
            "ticket": f"TCK-{r.randint(1000, 9999)}",
            "amount": f"{r.randint(80, 25000)},{r.randint(0, 99):02d}"
            if fr
            else f"{r.randint(80, 25000):,}.{r.randint(0, 99):02d}",
            "days": r.randint(2, 30),
            "hour": r.randint(9, 17),
            "day": r.choice(DAYS_FR if fr else DAYS_EN),
            "date": f"{r.randint(1, 28)} {r.choice(MONTHS_FR if fr else MONTHS_EN)}",
        }

    def system(self, fr: bool, s: dict[str, Any]) -> str:
        r = self.rng
        text = r.choice(SYSTEM_FR if fr else SYSTEM_EN).format(**s)
        rules = r.sample(GUIDELINES_FR if fr else GUIDELINES_EN, r.randint(0, 4))
        return " ".join([text, *rules])

    def email(self, fr: bool, s: dict[str, Any], topic: Any, n_body: int) -> str:
        r = self.rng
        _, subject, openings, body = topic
        # Topic sentences first, then general ones, none twice.
        pool = GENERIC_FR if fr else GENERIC_EN
        sentences = r.sample(body, min(n_body, len(body)))
        sentences += r.sample(pool, min(max(n_body - len(body), 0), len(pool)))
        paragraphs = [r.choice(openings)]
        # Two or three sentences per paragraph, as people write emails.
        while sentences:
            take = r.randint(2, 3)
            paragraphs.append(" ".join(sentences[:take]))
            sentences = sentences[take:]
        if r.random() < 0.5:
            paragraphs.append(r.choice(EXTRA_FR if fr else EXTRA_EN))
        if fr:
            greeting = f"Bonjour {'Monsieur' if s['title'] == 'M.' else 'Madame'} {s['last']},"
            closing = r.choice(["Bien cordialement,", "Cordialement,", "Avec mes salutations,"])
            head = f"Objet : {subject}"
        else:
            greeting = f"Dear {s['title']} {s['last']},"
            closing = r.choice(["Kind regards,", "Best regards,", "Yours sincerely,"])
            head = f"Subject: {subject}"
        text = "\n\n".join([head, greeting, *paragraphs, f"{closing}\n{s['signer']}"])
        return f"{text}\n{s['role'].capitalize()}, {s['company']}".format(**s)

    def call_id(self) -> str:
        return "call_" + "".join(self.rng.choices(_ID_ALPHABET, k=24))

    def example(self) -> dict[str, Any]:
        r = self.rng
        fr = r.random() < 0.5
        s = self.slots(fr)
        topic = r.choice(TOPICS_FR if fr else TOPICS_EN)
        request = topic[0].format(**s)
        user = f"Rédige un email qui {request}." if fr else f"Write an email to {request}."
        if r.random() < 0.3:
            user += " " + r.choice(GUIDELINES_FR if fr else GUIDELINES_EN)
        # Body length drives the example's size: ~100 to ~600 tokens in all.
        n_body = r.randint(1, 15)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system(fr, s)},
            {"role": "user", "content": user},
        ]
        example: dict[str, Any] = {"messages": messages}
        kind = r.random()
        if kind < 0.02:
            call_id = self.call_id()
            arguments = json.dumps({"order_id": s["order"]})
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": "get_order_status", "arguments": arguments},
                        }
                    ],
                }
            )
            status = {"order_id": s["order"], "status": "in_transit", "eta": s["date"]}
            messages.append(
                {"role": "tool", "tool_call_id": call_id, "content": json.dumps(status)}
            )
            messages.append({"role": "assistant", "content": self.email(fr, s, topic, n_body)})
            example["tools"] = [ORDER_TOOL, CUSTOMER_TOOL]
        else:
            first = {"role": "assistant", "content": self.email(fr, s, topic, n_body)}
            messages.append(first)
            if kind < 0.17:
                if r.random() < 0.5:
                    first["weight"] = 0  # train on the revised email only
                messages.append(
                    {"role": "user", "content": r.choice(REVISIONS_FR if fr else REVISIONS_EN)}
                )
                revised = self.email(fr, s, topic, max(1, n_body - r.randint(0, 3)))
                messages.append({"role": "assistant", "content": revised})
        return example


def write_chat_jsonl(path: Path, n: int, seed: int = 20260101) -> dict[str, Any]:
    """Write n examples to `path`; return facts about the file (size, sha256, mix)."""
    writer = _Writer(seed)
    digest = hashlib.sha256()
    n_tools = n_two_turns = 0
    size = 0
    with path.open("wb") as handle:
        for _ in range(n):
            example = writer.example()
            n_tools += "tools" in example
            n_two_turns += sum(m["role"] == "user" for m in example["messages"]) > 1
            line = (json.dumps(example, ensure_ascii=False) + "\n").encode()
            digest.update(line)
            size += len(line)
            handle.write(line)
    return {
        "n_examples": n,
        "seed": seed,
        "bytes": size,
        "sha256": digest.hexdigest(),
        "n_with_tools": n_tools,
        "n_with_second_turn": n_two_turns,
    }
