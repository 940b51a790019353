"""Langfuse's OpenAPI spec (v4.16.0), kept outside the repository, as a schema validator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPEC_PATH = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "reference"
    / "langfuse-openapi-v4.16.0.yml"
)
SPEC_URI = "urn:langfuse-openapi"

Validate = Callable[[str, Any], None]


def validator(spec: dict[str, Any]) -> Validate:
    """``validate(schema_name, instance)`` against ``#/components/schemas/<schema_name>``."""
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, DRAFT4.create_resource(spec))

    def check(schema_name: str, instance: Any) -> None:
        schema = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
        validator = OAS30Validator(schema, registry=registry, format_checker=oas30_format_checker)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])

    return check
