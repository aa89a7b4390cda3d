"""The unlearning benchmark's ``--params`` overrides: merged into a method's defaults,
validated by the method's own Params before anything trains."""

from __future__ import annotations

import pytest

from benchmarks import unlearning
from benchmarks.unlearning import METHODS, method_params


def test_an_override_is_merged_into_its_method_s_params_and_leaves_the_others():
    params = method_params(['pgu={"validation_eval_size": 1000}'])
    assert params["pgu"] == {**METHODS["pgu"], "validation_eval_size": 1000}
    assert METHODS["pgu"] == {"gamma": 0.95}  # the defaults themselves unchanged
    assert all(params[m] == METHODS[m] for m in METHODS if m != "pgu")


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("nope={}", "unknown method"),
        ("pgu=[1]", "not a JSON object"),
        ("pgu={bad", "not JSON"),
        ('pgu={"validation_eval_size": 1}', "validation_eval_size"),
        ('pgu={"gama": 0.9}', "gama"),
    ],
)
def test_a_bad_override_is_refused_with_what_is_wrong(override, says):
    with pytest.raises(ValueError, match=says):
        method_params([override])


def test_the_command_line_refuses_a_bad_override_before_training(capsys):
    with pytest.raises(SystemExit) as exited:
        unlearning.main(["--params", 'pgu={"gamma": 2}'])
    assert exited.value.code == 2
    assert "gamma" in capsys.readouterr().err
