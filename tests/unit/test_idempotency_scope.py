"""An Idempotency-Key's scope names the request's path with its ids written one way: every spelling of an id
that the routes accept is the same resource, and so the same request; any other segment is left as it is."""

from __future__ import annotations

import uuid

import pytest
from pydantic import TypeAdapter, ValidationError

from commerce.http import canonical_path

ID = uuid.UUID("6a6ccc99-4b04-48c1-9d1e-0123456789ab")
SPELLINGS = [str(ID), str(ID).upper(), ID.hex, ID.hex.upper(), "{" + str(ID) + "}", "{" + str(ID).upper() + "}",
             "urn:uuid:" + str(ID), "URN:UUID:" + str(ID), "{" + ID.hex + "}", "urn:uuid:" + ID.hex, "+" + ID.hex[1:],
             "0x" + ID.hex[2:], ID.hex[:31], " " + str(ID), str(ID) + "0", "orders", "", "reserve"]


@pytest.mark.parametrize("spelt", SPELLINGS)
def test_a_path_names_its_ids_as_the_routes_read_them(spelt: str) -> None:
    try:
        read = TypeAdapter(uuid.UUID).validate_python(spelt)  # what a route's UUID parameter makes of it
    except ValidationError:
        read = None
    path = f"/api/v1/inventory/{spelt}/reserve"
    assert canonical_path(path) == (f"/api/v1/inventory/{read}/reserve" if read is not None else path)
