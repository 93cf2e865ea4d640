"""The sandbox bank driven over HTTP: transfers, its clock, idempotency, faults and reports."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from clearline_local.sandbox_bank import (
    FAILING_ACCOUNTS,
    REPORT_COLUMNS,
    SUCCEEDING_ACCOUNT,
    TEST_ROUTING_NUMBER,
    SandboxBank,
)

ARRIVAL_SECONDS = 86_400
FAULT_DELAY_SECONDS = 0.2
CLIENT_TIMEOUT_SECONDS = 0.1  # under the fault delay, so a dropped answer reads as a timeout


@pytest.fixture
def bank() -> Iterator[SandboxBank]:
    # One bank per test: the clock and the reports are shared state.
    with SandboxBank(
        arrival_seconds=ARRIVAL_SECONDS, fault_delay_seconds=FAULT_DELAY_SECONDS
    ) as sandbox:
        yield sandbox


def key() -> str:
    return f"test-{uuid.uuid4()}"


def transfer_body(account: str = SUCCEEDING_ACCOUNT, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": 12_345,
        "currency": "usd",
        "routing_number": TEST_ROUTING_NUMBER,
        "account_number": account,
        "reference": f"po_{uuid.uuid4().hex[:12]}",
    }
    body.update(changes)
    return {name: value for name, value in body.items() if value is not None}


def post(
    bank: SandboxBank,
    path: str,
    body: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    timeout: float = 5,
) -> requests.Response:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return requests.post(bank.url + path, json=body, headers=headers, timeout=timeout)


def get(bank: SandboxBank, path: str) -> requests.Response:
    return requests.get(bank.url + path, timeout=5)


def create(bank: SandboxBank, account: str = SUCCEEDING_ACCOUNT, **changes: Any) -> dict[str, Any]:
    response = post(bank, "/v1/transfers", transfer_body(account, **changes), key())
    assert response.status_code == 200, response.text
    transfer: dict[str, Any] = response.json()
    return transfer


def advance(bank: SandboxBank, seconds: float) -> float:
    response = post(bank, "/_sandbox/clock", {"advance_seconds": seconds})
    assert response.status_code == 200, response.text
    now: float = response.json()["now"]
    return now


def report(bank: SandboxBank, *days: dt.date) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for day in sorted(set(days)):
        response = post(bank, "/_sandbox/reports", {"date": day.isoformat()})
        assert response.status_code == 200, response.text
        rows += response.json()["rows"]
    return rows


def arrival_day(transfer: dict[str, Any]) -> dt.date:
    return dt.datetime.fromtimestamp(transfer["arrival_date"], dt.UTC).date()


def listing(bank: SandboxBank) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = get(bank, "/_sandbox/transfers").json()["data"]
    return data


# -------------------------------------------------------------------------- transfers


def test_a_transfer_is_accepted_in_transit(bank: SandboxBank) -> None:
    body = transfer_body()
    response = post(bank, "/v1/transfers", body, key())

    assert response.status_code == 200
    transfer = response.json()
    assert transfer["id"].startswith("tr_") and len(transfer["id"]) == 27
    assert transfer["object"] == "transfer"
    assert transfer["status"] == "in_transit"
    assert (transfer["amount"], transfer["currency"]) == (12_345, "usd")
    assert transfer["reference"] == body["reference"]
    assert transfer["account_last4"] == "6789"
    assert transfer["created"] <= bank.now()
    assert transfer["arrival_date"] == transfer["created"] + ARRIVAL_SECONDS
    assert transfer["failure_code"] is None and transfer["failure_message"] is None
    assert get(bank, f"/v1/transfers/{transfer['id']}").json() == transfer
    assert bank.transfers() == [transfer]


def test_a_transfer_is_paid_once_the_bank_clock_reaches_its_arrival_date(
    bank: SandboxBank,
) -> None:
    transfer = create(bank)

    now = advance(bank, ARRIVAL_SECONDS - 60)
    assert now < transfer["arrival_date"]
    assert get(bank, f"/v1/transfers/{transfer['id']}").json()["status"] == "in_transit"

    assert advance(bank, 60) >= transfer["arrival_date"]
    paid = get(bank, f"/v1/transfers/{transfer['id']}").json()
    assert paid == {**transfer, "status": "paid"}
    assert get(bank, "/_sandbox/clock").json()["now"] >= transfer["arrival_date"]


@pytest.mark.parametrize(("account", "code"), sorted(FAILING_ACCOUNTS.items()))
def test_failing_accounts_are_returned_on_arrival(
    bank: SandboxBank, account: str, code: str
) -> None:
    transfer = create(bank, account)
    assert transfer["status"] == "in_transit" and transfer["failure_code"] is None
    assert transfer["account_last4"] == account[-4:]

    advance(bank, ARRIVAL_SECONDS)
    returned = get(bank, f"/v1/transfers/{transfer['id']}").json()
    assert returned["status"] == "returned"
    assert returned["failure_code"] == code
    assert returned["failure_message"].endswith(".")


def test_any_other_valid_account_is_paid(bank: SandboxBank) -> None:
    transfer = create(bank, "1234")
    advance(bank, ARRIVAL_SECONDS)
    assert get(bank, f"/v1/transfers/{transfer['id']}").json()["status"] == "paid"


def test_an_unknown_transfer_is_missing(bank: SandboxBank) -> None:
    response = get(bank, "/v1/transfers/tr_nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "resource_missing"


def test_transfers_cannot_be_recalled(bank: SandboxBank) -> None:
    transfer = create(bank)
    response = post(bank, f"/v1/transfers/{transfer['id']}/cancel", {}, key())
    assert response.status_code == 404


def test_arrival_seconds_is_configurable(bank: SandboxBank) -> None:
    response = post(bank, "/_sandbox/config", {"arrival_seconds": 3_600, "latency_ms": 0})
    assert response.json() == {"latency_ms": 0, "arrival_seconds": 3_600}
    transfer = create(bank)
    assert transfer["arrival_date"] == transfer["created"] + 3_600

    refused = post(bank, "/_sandbox/config", {"arrival_seconds": 0, "latency_ms": 5})
    assert refused.status_code == 400
    assert get(bank, "/_sandbox/config").json() == {"latency_ms": 0, "arrival_seconds": 3_600}


@pytest.mark.parametrize("seconds", [-1, "60", True, None])
def test_the_clock_only_moves_forward_by_a_number(bank: SandboxBank, seconds: Any) -> None:
    before = bank.now()
    response = post(bank, "/_sandbox/clock", {"advance_seconds": seconds})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_clock"
    assert bank.now() - before < 5


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("changes", "code", "param"),
    [
        ({"routing_number": "021000021"}, "invalid_routing_number", "routing_number"),
        ({"routing_number": None}, "parameter_missing", "routing_number"),
        ({"account_number": "123"}, "invalid_account_number", "account_number"),
        ({"account_number": "123456789012345678"}, "invalid_account_number", "account_number"),
        ({"account_number": "0001234567-89"}, "invalid_account_number", "account_number"),
        ({"account_number": None}, "parameter_missing", "account_number"),
        ({"amount": 0}, "parameter_invalid_integer", "amount"),
        ({"amount": 100_000_000}, "parameter_invalid_integer", "amount"),
        ({"amount": "100"}, "parameter_invalid_integer", "amount"),
        ({"amount": True}, "parameter_invalid_integer", "amount"),
        ({"currency": "dollars"}, "invalid_currency", "currency"),
        ({"currency": None}, "parameter_missing", "currency"),
        ({"reference": None}, "parameter_missing", "reference"),
        ({"reference": ""}, "parameter_missing", "reference"),
        ({"reference": "x" * 256}, "parameter_invalid", "reference"),
    ],
)
def test_refusals_store_nothing_under_the_key(
    bank: SandboxBank, changes: dict[str, Any], code: str, param: str
) -> None:
    idempotency_key = key()
    response = post(bank, "/v1/transfers", transfer_body(**changes), idempotency_key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["param"] == param
    assert SUCCEEDING_ACCOUNT not in response.text
    assert get(bank, f"/v1/idempotency/{idempotency_key}").status_code == 404
    assert bank.transfers() == []
    # The key is still free: a corrected request commits under it.
    assert post(bank, "/v1/transfers", transfer_body(), idempotency_key).status_code == 200


def test_a_post_without_a_key_is_refused(bank: SandboxBank) -> None:
    response = post(bank, "/v1/transfers", transfer_body())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "idempotency_key_missing"
    assert bank.transfers() == []


def test_a_body_that_is_not_a_json_object_is_refused(bank: SandboxBank) -> None:
    response = requests.post(
        bank.url + "/v1/transfers", data=b"[1]", headers={"Idempotency-Key": key()}, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


# ------------------------------------------------------------------------ idempotency


def test_a_retried_key_replays_the_same_transfer(bank: SandboxBank) -> None:
    idempotency_key, body = key(), transfer_body()
    first = post(bank, "/v1/transfers", body, idempotency_key)
    advance(bank, ARRIVAL_SECONDS)  # the replay is the answer first given, not today's status
    again = post(bank, "/v1/transfers", body, idempotency_key)

    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.json() == first.json()
    assert get(bank, f"/v1/idempotency/{idempotency_key}").json() == first.json()
    assert len(bank.transfers()) == 1


@pytest.mark.parametrize(
    "changes", [{"amount": 1}, {"account_number": "000111111116"}, {"reference": "po_other"}]
)
def test_a_key_reused_with_other_parameters_is_refused(
    bank: SandboxBank, changes: dict[str, Any]
) -> None:
    idempotency_key, body = key(), transfer_body()
    assert post(bank, "/v1/transfers", body, idempotency_key).status_code == 200

    response = post(bank, "/v1/transfers", {**body, **changes}, idempotency_key)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_mismatch"
    assert len(bank.transfers()) == 1


def test_timeout_after_commits_once_and_the_retry_replays(bank: SandboxBank) -> None:
    assert post(bank, "/_sandbox/faults", {"mode": "timeout_after"}).json() == {
        "faults": ["timeout_after"]
    }
    idempotency_key, body = key(), transfer_body()

    with pytest.raises(requests.RequestException):
        post(bank, "/v1/transfers", body, idempotency_key, timeout=CLIENT_TIMEOUT_SECONDS)

    committed = get(bank, f"/v1/idempotency/{idempotency_key}")
    assert committed.status_code == 200
    retry = post(bank, "/v1/transfers", body, idempotency_key)
    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == committed.json()
    assert [t["id"] for t in listing(bank)] == [retry.json()["id"]]


def test_timeout_before_and_error_500_commit_nothing(bank: SandboxBank) -> None:
    post(bank, "/_sandbox/faults", {"mode": "timeout_before"})
    post(bank, "/_sandbox/faults", {"mode": "error_500"})
    assert get(bank, "/_sandbox/faults").json() == {"faults": ["timeout_before", "error_500"]}
    idempotency_key, body = key(), transfer_body()

    with pytest.raises(requests.RequestException):
        post(bank, "/v1/transfers", body, idempotency_key, timeout=CLIENT_TIMEOUT_SECONDS)
    failed = post(bank, "/v1/transfers", body, idempotency_key)
    assert failed.status_code == 500
    assert bank.transfers() == []

    retry = post(bank, "/v1/transfers", body, idempotency_key)
    assert retry.status_code == 200 and "Idempotent-Replayed" not in retry.headers
    assert len(bank.transfers()) == 1


def test_faults_can_be_cleared(bank: SandboxBank) -> None:
    post(bank, "/_sandbox/faults", {"mode": "error_500", "count": 3})
    assert requests.delete(bank.url + "/_sandbox/faults", timeout=5).json() == {"faults": []}
    assert post(bank, "/_sandbox/faults", {"mode": "melt"}).status_code == 400
    assert bank.pending_faults() == []


def test_a_revoked_key_never_commits(bank: SandboxBank) -> None:
    idempotency_key = key()
    revoked = post(bank, f"/v1/idempotency/{idempotency_key}/revoke")
    assert (revoked.status_code, revoked.json()) == (200, {"revoked": idempotency_key})
    assert post(bank, f"/v1/idempotency/{idempotency_key}/revoke").status_code == 200

    response = post(bank, "/v1/transfers", transfer_body(), idempotency_key)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_revoked"
    assert bank.transfers() == []


def test_revoking_a_committed_key_says_what_was_committed(bank: SandboxBank) -> None:
    idempotency_key = key()
    transfer = post(bank, "/v1/transfers", transfer_body(), idempotency_key).json()

    response = post(bank, f"/v1/idempotency/{idempotency_key}/revoke")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_committed"
    assert response.json()["committed"] == transfer


# ----------------------------------------------------------------------------- report


def test_the_report_lists_each_resolved_transfer_once(bank: SandboxBank) -> None:
    paid = create(bank)
    returned = create(bank, "000222222227")
    advance(bank, ARRIVAL_SECONDS)
    pending = create(bank)  # due a day later, still in transit
    days = [arrival_day(t) for t in (paid, returned, pending)]

    rows = report(bank, *days)
    assert [row["transfer_id"] for row in rows] == [paid["id"], returned["id"]]
    assert all(list(row) == REPORT_COLUMNS for row in rows)
    assert rows[0] == {
        "report_date": arrival_day(paid).isoformat(),
        "transfer_id": paid["id"],
        "reference": paid["reference"],
        "status": "paid",
        "amount": 12_345,
        "currency": "usd",
        "failure_code": "",
    }
    assert (rows[1]["status"], rows[1]["failure_code"]) == ("returned", "insufficient_funds")

    # Reported already: never again. The pending one once it has arrived.
    assert report(bank, *days) == []
    advance(bank, ARRIVAL_SECONDS)
    assert [row["transfer_id"] for row in report(bank, *days)] == [pending["id"]]
    assert report(bank, *days) == []


def test_report_rows_matches_the_http_report(bank: SandboxBank) -> None:
    transfer = create(bank)
    advance(bank, ARRIVAL_SECONDS)
    rows = bank.report_rows(arrival_day(transfer))
    assert [row["transfer_id"] for row in rows] == [transfer["id"]]
    assert report(bank, arrival_day(transfer)) == []


def test_a_report_needs_a_date(bank: SandboxBank) -> None:
    response = post(bank, "/_sandbox/reports", {"date": "yesterday"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_date"


# -------------------------------------------------------------------- account numbers


def test_account_numbers_never_appear_in_any_answer(bank: SandboxBank) -> None:
    accounts = [SUCCEEDING_ACCOUNT, *FAILING_ACCOUNTS]
    bodies: list[str] = []
    keys: list[str] = []
    for account in accounts:
        idempotency_key, body = key(), transfer_body(account)
        keys.append(idempotency_key)
        bodies.append(post(bank, "/v1/transfers", body, idempotency_key).text)
        replay = post(bank, "/v1/transfers", body, idempotency_key)
        assert replay.headers["Idempotent-Replayed"] == "true"
        bodies.append(replay.text)
    advance(bank, ARRIVAL_SECONDS)
    transfers = listing(bank)
    bodies.append(get(bank, "/_sandbox/transfers").text)
    bodies += [get(bank, f"/v1/transfers/{t['id']}").text for t in transfers]
    bodies += [get(bank, f"/v1/idempotency/{k}").text for k in keys]
    bodies += [post(bank, f"/v1/idempotency/{k}/revoke").text for k in keys]
    bodies.append(str(report(bank, *(arrival_day(t) for t in transfers))))

    assert sorted(t["account_last4"] for t in transfers) == sorted(a[-4:] for a in accounts)
    for account in accounts:
        assert not any(account in body for body in bodies), account
