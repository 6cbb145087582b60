"""schemathesis against a running `identify serve`: requests generated from /api/v1/openapi.json, fitting the
document and not, as the public and as a curator. No answer may be a server error, and every answer must be
one the document lists for the operation, with the content type and body schema it declares.

(schemathesis' own pytest decorator does not run under pytest 9, so the test drives hypothesis itself.)"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_headers_conformance, response_schema_conformance,
                                               status_code_conformance)

from identify.curators import Curators
from identify.storage import Store, make_engine
from tests.conftest import _postgres_database, gunicorn_serving, serving

EXAMPLES = int(os.environ.get("IDENTIFY_CONTRACT_EXAMPLES", 20))  # per operation, mode and caller (9 x 2 x 2 x 20)
# Not schemathesis' positive_data_acceptance: a request can fit the document and still be wrong in ways a schema
# cannot say (random bytes as a photo, lat without lon, `from` after `to`), and those get their 400.
CONFORMS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
            response_schema_conformance]
# negative_data_rejection (a request the document forbids must get a 4xx) everywhere but multipart bodies: a
# multipart form cannot tell a one-element array from a string, so schemathesis' "array" there is one value.
CHECKS = [*CONFORMS, negative_data_rejection]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["waitress-sqlite", pytest.param("gunicorn-postgresql", marks=pytest.mark.postgres)])
def served_alone(request, tmp_path_factory, tiny_checkpoint, tiny_backbone):  # type: ignore[no-untyped-def]
    """A server of its own (what schemathesis stores must not crowd the browser tests' review queue): `identify
    serve` on SQLite, and the README's deployment, two gunicorn workers on PostgreSQL."""
    root = tmp_path_factory.mktemp("contract")
    if request.param == "waitress-sqlite":
        with serving(root, tiny_checkpoint, tiny_backbone) as server:
            yield server
        return
    for url in _postgres_database():
        with gunicorn_serving(root, tiny_checkpoint, tiny_backbone, url, IDENTIFY_K="1") as server:
            yield server


def _curator_token(served: dict) -> str:
    engine = make_engine(served["database_url"])
    token = Curators(Store(engine)).create("contract", "a long enough password")
    engine.dispose()
    return token


def test_the_api_keeps_its_contract(served_alone):  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_url(served_alone["base"] + "/api/v1/openapi.json")
    callers = {"public": {}, "curator": {"Authorization": f"Bearer {_curator_token(served_alone)}"}}
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                      database=None)
            def keeps_contract(case):  # type: ignore[no-untyped-def]
                checks = CONFORMS if case.media_type == "multipart/form-data" else CHECKS
                for headers in callers.values():
                    case.call_and_validate(headers=headers, checks=checks)

            try:
                keeps_contract()
            except Unsatisfiable:  # nothing to get wrong (an operation without parameters has no negative case)
                assert mode == GenerationMode.NEGATIVE
            except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; failures reported together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {str(exc)[:1500]}")
    assert operations == 18
    assert failures == [], "\n\n".join(failures)
