"""The parameter tables of ``docs/unlearners.md``, rendered from the methods' ``Params``.

A field's description, default and bounds live in its method's ``Params`` model and only
there; the doc holds one table per registered method between ``<!-- params:NAME -->`` and
``<!-- /params:NAME -->``, and everything outside the markers is prose written by hand.

    python -m ml.unlearners.docs            rewrite the tables in docs/unlearners.md
    python -m ml.unlearners.docs --check    exit 1 when the tables differ from the schemas

``tests/ml/test_unlearner_docs.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ml.unlearners.early_stopping import StopRuleParams
from ml.unlearners.registry import list_unlearners, unlearner_class

__all__ = ["DOC", "params_table", "render", "main"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "unlearners.md"
_BLOCK = re.compile(r"<!-- params:(?P<name>[\w-]+) -->\n.*?<!-- /params:(?P=name) -->", re.S)
_HEADER = "| param | type | default | bounds | description |\n|---|---|---|---|---|"


def _number(value: float) -> str:
    """Digits only (a thousands comma would read as the interval's); a float bound such as
    1e6 as the integer it is."""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e5:
        value = int(value)
    return repr(value)


def _bounds(schema: dict[str, Any]) -> str:
    """The schema's constraints as an interval, or its choices."""
    if "enum" in schema:
        return ", ".join(f"`{choice}`" for choice in schema["enum"])
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        inner = _bounds(schema["additionalProperties"])
        return f"values {inner}" if inner else ""
    low = next(((k, schema[k]) for k in ("minimum", "exclusiveMinimum") if k in schema), None)
    high = next(((k, schema[k]) for k in ("maximum", "exclusiveMaximum") if k in schema), None)
    if low and high:
        left = "[" if low[0] == "minimum" else "("
        right = "]" if high[0] == "maximum" else ")"
        return f"{left}{_number(low[1])}, {_number(high[1])}{right}"
    if low:
        return f"{'>=' if low[0] == 'minimum' else '>'} {_number(low[1])}"
    if high:
        return f"{'<=' if high[0] == 'maximum' else '<'} {_number(high[1])}"
    return ""


def _default(value: Any) -> str:
    plain = to_jsonable_python(value)
    if isinstance(plain, str):
        return f"`{plain}`"
    if isinstance(plain, int | float) and not isinstance(plain, bool):
        return f"`{_number(plain)}`"
    return f"`{json.dumps(plain)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _ordered(params: type[BaseModel]) -> list[str]:
    """The method's own fields first, then the shared stop-rule knobs it inherits."""
    shared = [name for name in StopRuleParams.model_fields if name in params.model_fields]
    return [name for name in params.model_fields if name not in shared] + shared


def params_table(name: str) -> str:
    """The markdown table of method ``name``'s params (a sentence when it takes none)."""
    params = unlearner_class(name).Params
    if not params.model_fields:
        return "No params."
    # The validation schema is keyed by the names a request sends (``lambda``, not
    # ``lambda_``), in field order.
    properties = params.model_json_schema(mode="validation")["properties"]
    keys = dict(zip(params.model_fields, properties, strict=True))
    rows = []
    for field_name in _ordered(params):
        field = params.model_fields[field_name]
        schema = properties[keys[field_name]]
        if not field.description:
            raise ValueError(f"{name}: the param {field_name!r} has no description")
        # An optional knob (``float | None``): the type and bounds of its value; its unset
        # default is described in words.
        branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
        value = branches[0] if len(branches) == 1 else schema
        default = field.get_default(call_default_factory=True)
        cells = [
            f"`{keys[field_name]}`",
            value.get("type", "") + (" or null" if "anyOf" in schema else ""),
            "unset" if default is None else _default(default),
            _bounds(value),
            field.description,
        ]
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join([_HEADER, *rows])


def render(text: str) -> str:
    """``text`` with every method's block holding its current table. Every registered
    method needs its markers, and no markers may name a method that is not registered."""
    names = list_unlearners()
    found = [match["name"] for match in _BLOCK.finditer(text)]
    missing, unknown = sorted(set(names) - set(found)), sorted(set(found) - set(names))
    if missing or unknown or len(found) != len(set(found)):
        raise ValueError(
            f"params markers: missing {missing}, unknown {unknown}, found {found}; each "
            "registered method needs one <!-- params:NAME --> ... <!-- /params:NAME --> block"
        )

    def block(match: re.Match[str]) -> str:
        name = match["name"]
        return f"<!-- params:{name} -->\n{params_table(name)}\n<!-- /params:{name} -->"

    return _BLOCK.sub(block, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.unlearners.docs", description=__doc__)
    parser.add_argument("--path", type=Path, default=DOC, help="the doc (docs/unlearners.md)")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when the tables drifted"
    )
    args = parser.parse_args(argv)
    text = args.path.read_text()
    rendered = render(text)
    if args.check:
        if rendered != text:
            sys.stderr.write(
                f"{args.path}: params tables drifted; run python -m ml.unlearners.docs\n"
            )
            return 1
        return 0
    if rendered != text:
        args.path.write_text(rendered)
        sys.stdout.write(f"rewrote the params tables in {args.path}\n")
    return 0


if __name__ == "__main__":  # the package's __init__ has registered every method by now
    sys.exit(main())
