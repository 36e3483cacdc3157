"""The JSON Schemas of the config and the session sheet, shipped inside the package.

Every key has a ``description`` and ``additionalProperties: false`` makes a typo an
error naming the key. Validation fills in the schema's ``default`` values: the schema
is the one place a default is defined, and code reads the validated values.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema
import yaml

from vhi.errors import ConfigError

#: Schema file names inside ``vhi/config/schemas/``.
CONFIG_SCHEMA = "config.schema.yaml"
SHEET_SCHEMA = "sheet.schema.yaml"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema shipped with the package, by file name."""
    return yaml.safe_load(files(__package__).joinpath("schemas", name).read_text())


def definition(name: str, schema: str = CONFIG_SCHEMA) -> dict[str, Any]:
    """A schema with ``$defs/<name>`` as its root (its references still resolve)."""
    full = load_schema(schema)
    return {**full["$defs"][name], "$defs": full["$defs"]}


def _with_defaults(validator_class: type) -> type:
    """A validator that fills in the schema's ``default`` values while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "object"):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    default = sub["default"]
                    instance[name] = (dict(default) if isinstance(default, dict)
                                      else list(default) if isinstance(default, list) else default)
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)
#: user:password@ in a URL: never echoed in a message
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s'\"]+@")


def _where(error: jsonschema.ValidationError, root: str) -> str:
    parts = [root]
    for part in error.absolute_path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts)


def validate(instance: dict[str, Any], schema: str | dict[str, Any], what: str) -> dict[str, Any]:
    """Validate ``instance`` in place (defaults filled in); the first error names the key."""
    if isinstance(schema, str):
        schema = load_schema(schema)
    errors = list(_Validator(schema).iter_errors(instance))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_where(error, what), _URL_CREDENTIALS.sub("***@", error.message))
    return instance


