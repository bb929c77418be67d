#!/usr/bin/env python3
"""Writes tests/fixtures/stripe/webhook_signed_by_stripe_python.json: a webhook signed by Stripe's own library.

Why: the fake Stripe (crates/test-support/src/fake_stripe.rs) signs the webhooks it delivers with its own
`stripe_signature_header`. A test there compares its output with this fixture, so the fake's signer is checked
against Stripe's code rather than against our reading of https://docs.stripe.com/webhooks (signature section).

What it does:
  1. takes a fixed payload (a `payment_intent.succeeded` event whose PaymentIntent carries the metadata
     `acp_attempt_id: pa_fixture`), a fixed secret and a fixed timestamp;
  2. signs it with the stripe library's `stripe.WebhookSignature.generate_signature_header`;
  3. verifies the header with `stripe.Webhook.construct_event` (tolerance disabled: the timestamp is fixed),
     and checks that a tampered payload and a wrong secret are refused;
  4. does the same for a header carrying one `v1=` per secret during a secret rotation (Stripe's format: the
     library has no helper that builds it, so the script joins the library's own per-secret signatures, and the
     library verifies the result with each secret);
  5. writes {payload, secret, timestamp, header, stripe_python_version, rotation} as JSON.

Run from the repository root (PyPI must be reachable):

    python3 -m venv /tmp/stripe-fixture-venv
    /tmp/stripe-fixture-venv/bin/pip install stripe==16.1.0
    /tmp/stripe-fixture-venv/bin/python scripts/stripe-signature-fixture.py

The output is deterministic for a given stripe version: re-running it must not change the fixture.
"""

import json
import pathlib
import sys

import stripe

PINNED_STRIPE_VERSION = "16.1.0"
SECRET = "whsec_fixture_0123456789abcdef"
ROTATED_SECRET = "whsec_fixture_rotated_fedcba9876543210"
TIMESTAMP = 1767225600  # 2026-01-01T00:00:00Z

FIXTURE = (
    pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stripe" / "webhook_signed_by_stripe_python.json"
)

# Stripe delivers pretty-printed JSON; the signature covers these exact bytes.
PAYLOAD = json.dumps(
    {
        "id": "evt_3FixtureEventSucceeded0001",
        "object": "event",
        "api_version": "2026-04-22.preview",
        "created": TIMESTAMP,
        "data": {
            "object": {
                "id": "pi_3FixturePaymentIntent00001",
                "object": "payment_intent",
                "amount": 2500,
                "amount_capturable": 0,
                "amount_received": 2500,
                "canceled_at": None,
                "cancellation_reason": None,
                "capture_method": "automatic_async",
                "client_secret": "pi_3FixturePaymentIntent00001_secret_FixtureSecret000000000",
                "confirmation_method": "automatic",
                "created": TIMESTAMP - 2,
                "currency": "usd",
                "description": None,
                "last_payment_error": None,
                "latest_charge": "ch_3FixtureCharge000000000001",
                "livemode": False,
                "metadata": {"acp_attempt_id": "pa_fixture"},
                "next_action": None,
                "payment_method": "pm_1FixturePaymentMethod00001",
                "payment_method_types": ["card"],
                "status": "succeeded",
            }
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_FixtureRequest0001", "idempotency_key": "pa_fixture"},
        "type": "payment_intent.succeeded",
    },
    indent=2,
)


def refused(payload: str, header: str, secret: str) -> bool:
    try:
        stripe.Webhook.construct_event(payload, header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return True
    return False


def main() -> int:
    if stripe.VERSION != PINNED_STRIPE_VERSION:
        print(f"expected stripe=={PINNED_STRIPE_VERSION}, found {stripe.VERSION}", file=sys.stderr)
        return 1

    header = stripe.WebhookSignature.generate_signature_header(PAYLOAD, SECRET, timestamp=TIMESTAMP)
    # tolerance=None disables the timestamp check (the fixture's timestamp is fixed in the past).
    event = stripe.Webhook.construct_event(PAYLOAD, header, SECRET, tolerance=None)
    assert event.type == "payment_intent.succeeded"
    assert event.data.object.metadata["acp_attempt_id"] == "pa_fixture"
    assert refused(PAYLOAD.replace("2500", "2501"), header, SECRET), "a tampered payload must be refused"
    assert refused(PAYLOAD, header, SECRET + "x"), "a wrong secret must be refused"

    # Secret rotation: one v1 per active secret, each computed by the library's own signer.
    signed = f"{TIMESTAMP}.{PAYLOAD}"
    rotation_secrets = [ROTATED_SECRET, SECRET]
    rotation_header = f"t={TIMESTAMP}" + "".join(
        f",v1={stripe.WebhookSignature._compute_signature(signed, s)}" for s in rotation_secrets
    )
    for secret in rotation_secrets:
        stripe.Webhook.construct_event(PAYLOAD, rotation_header, secret, tolerance=None)
    assert refused(PAYLOAD, rotation_header, "whsec_not_active"), "an inactive secret must be refused"

    fixture = {
        "payload": PAYLOAD,
        "secret": SECRET,
        "timestamp": TIMESTAMP,
        "header": header,
        "stripe_python_version": stripe.VERSION,
        "rotation": {"secrets": rotation_secrets, "header": rotation_header},
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(fixture, indent=2) + "\n")
    print(f"wrote {FIXTURE} (stripe {stripe.VERSION}): {header}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
