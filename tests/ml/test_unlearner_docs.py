"""docs/unlearners.md's params tables are the methods' schemas, rendered
(``python -m ml.unlearners.docs`` rewrites them)."""

from __future__ import annotations

import pytest

from ml.unlearners import list_unlearners, unlearner_class
from ml.unlearners.docs import DOC, main, params_table, render


def test_the_params_tables_in_the_doc_match_the_schemas():
    text = DOC.read_text()
    assert render(text) == text, "the params tables drifted: run python -m ml.unlearners.docs"


def test_every_param_of_every_method_is_described_and_in_its_table():
    for name in list_unlearners():
        table = params_table(name)
        for field_name, field in unlearner_class(name).Params.model_fields.items():
            assert field.description, f"{name}.{field_name} has no description"
            assert f"`{field.alias or field_name}`" in table


def test_an_edited_table_or_description_is_drift(tmp_path, monkeypatch):
    text = DOC.read_text()
    described = "Forget samples stepped on between two checks."
    assert described in text
    # Someone edits the table by hand ...
    edited = tmp_path / "unlearners.md"
    edited.write_text(text.replace(described, "Forget samples between checks.", 1))
    assert render(edited.read_text()) != edited.read_text()
    assert main(["--path", str(edited), "--check"]) == 1
    assert main(["--path", str(edited)]) == 0  # ... and the generator puts it back
    assert edited.read_text() == text
    # ... or the description changes in the schema and the doc is not regenerated.
    field = unlearner_class("pgu").Params.model_fields["gamma"]
    monkeypatch.setattr(field, "description", "Changed.")
    assert main(["--path", str(DOC), "--check"]) == 1


def test_the_bounds_and_choices_come_from_the_schema():
    table = params_table("pgu")
    assert "| `gamma` | number | `0.9` | (0, 1] |" in table
    assert "| `offset` | number | `0.05` | (0, 1) |" in table
    assert "| `lambda` | number | `0.2` | [-10, 10] |" in table  # the alias, as sent
    assert "| `layer_gamma` | object | `{}` | values (0, 1] |" in table
    assert "`normalized`, `sgd`" in table
    assert params_table("retrain") == "No params."


def test_a_method_without_its_markers_is_refused():
    text = DOC.read_text()
    with pytest.raises(ValueError, match="missing \\['pgu'\\]"):
        render(text.replace("<!-- params:pgu -->", "", 1))
