"""The HTTP error table (commerce/http.py): each error the layers below raise becomes the problem the
contract names, with the status, headers and members a client acts on; what is unknown is a bare 500."""

from __future__ import annotations

import json
import uuid

import pytest

from actors.client import ServiceUnavailable
from commerce.auth import Forbidden, InvalidCredentials
from commerce.http import PROBLEM, PROBLEM_BASE, RateLimited, error_response, is_final
from domain import errors, inventory
from store.errors import ConcurrencyConflict, StoreUnavailable
from store.idempotency import KeyInFlight, KeyReused

PID = uuid.uuid4()


@pytest.mark.parametrize(("error", "status", "kind"), [
    (InvalidCredentials("bad token"), 401, "unauthorized"),
    (Forbidden("not yours"), 403, "forbidden"),
    (RateLimited("3"), 429, "rate-limited"),
    (errors.NotFound("no such order"), 404, "not-found"),
    (inventory.InsufficientStock(PID, 5, 2), 409, "insufficient-stock"),
    (errors.TransitionForbidden("confirmed already", "CONFIRMED"), 409, "state-conflict"),
    (ConcurrencyConflict(PID, 3), 409, "concurrent-update"),
    (KeyInFlight("k"), 409, "request-in-progress"),
    (KeyReused("k"), 422, "idempotency-key-reused"),
    (errors.DomainError("quantity must be positive"), 422, "invalid-request"),
    (StoreUnavailable("connection refused"), 503, "dependency-unavailable"),
    (ServiceUnavailable("shard restarting"), 503, "dependency-unavailable"),
])
def test_each_error_is_the_problem_the_contract_names(error: Exception, status: int, kind: str) -> None:
    r = error_response(error)
    body = json.loads(r.body)
    assert (r.status_code, r.media_type, body["type"], body["status"]) == (status, PROBLEM, PROBLEM_BASE + kind, status)


def test_what_a_client_acts_on_comes_with_the_problem() -> None:
    assert error_response(RateLimited("7")).headers["retry-after"] == "7"
    assert error_response(InvalidCredentials("x")).headers["www-authenticate"] == "Bearer"
    for transient in (StoreUnavailable("down"), KeyInFlight("k"), ConcurrencyConflict(PID, 1)):
        assert error_response(transient).headers["retry-after"] == "1"
    assert json.loads(error_response(inventory.InsufficientStock(PID, 5, 2)).body)["available"] == 2
    conflict = json.loads(error_response(errors.TransitionForbidden("no", "CONFIRMED")).body)
    assert conflict["current_status"] == "CONFIRMED" and conflict["status"] == 409  # RFC 9457's status stays


def test_an_outage_and_an_unknown_error_say_nothing_of_their_cause() -> None:
    outage = json.loads(error_response(StoreUnavailable("password authentication failed for user x")).body)
    assert "password" not in outage["detail"]
    unknown = error_response(RuntimeError("secret internals"))
    assert unknown.status_code == 500 and "secret" not in unknown.body.decode()


def test_only_final_answers_may_be_replayed_for_a_repeated_key() -> None:
    assert is_final(error_response(errors.NotFound("x"))) and is_final(error_response(KeyReused("k")))
    for not_final in (StoreUnavailable("x"), KeyInFlight("k"), ConcurrencyConflict(PID, 1), RateLimited("1"),
                      RuntimeError("x")):
        assert not is_final(error_response(not_final))
