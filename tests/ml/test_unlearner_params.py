"""The stop-rule knobs every stepping method shares (``StopRuleParams``), and params stored
under ``holdout_eval_size``, the old name of ``validation_eval_size``."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ml.unlearners import get_unlearner, list_unlearners, unlearner_class, validate_params
from ml.unlearners.early_stopping import StopRuleParams
from service.models.schemas import UnlearnerSpec

STEPPING = ["conmu", "dau", "gradient_ascent", "ltu", "pgu", "rfu_ss"]


def test_the_methods_that_step_on_the_forget_set_share_the_stop_rule_knobs():
    sharing = [
        name
        for name in list_unlearners()
        if issubclass(unlearner_class(name).Params, StopRuleParams)
    ]
    assert sorted(sharing) == STEPPING
    for name in STEPPING:
        params = validate_params(name, {})
        assert params["stop"] == "auto"
        own = unlearner_class(name).Params.model_fields["check_every"].default
        assert params["check_every"] == own == (2048 if name == "conmu" else 128)
        assert params["validation_eval_size"] == 500
        assert "holdout_eval_size" not in params


@pytest.mark.parametrize("name", STEPPING)
def test_params_stored_under_the_old_name_still_validate_and_dump_under_the_new(name):
    stored = json.loads('{"holdout_eval_size": 70, "check_every": 64}')
    assert validate_params(name, stored) == validate_params(
        name, {"validation_eval_size": 70, "check_every": 64}
    )
    assert get_unlearner(name, stored).params.validation_eval_size == 70
    # A model row holds the spec as JSON; reading it back goes through the same schema.
    spec = UnlearnerSpec.model_validate({"name": name, "params": stored})
    assert spec.params["validation_eval_size"] == 70 and "holdout_eval_size" not in spec.params
    assert spec.build().params.validation_eval_size == 70


@pytest.mark.parametrize(
    "params, problem",
    [
        ({"holdout_eval_sizes": 70}, "holdout_eval_sizes"),  # unknown keys: still refused
        ({"validation_eval_size": "70"}, "validation_eval_size"),  # strict: no coercion
        ({"holdout_eval_size": "70"}, "holdout_eval_size\n  Input should be a valid integer"),
        ({"holdout_eval_size": 9}, "greater than or equal to 10"),  # the old bounds
        ({"validation_eval_size": 100_001}, "less than or equal to 100000"),
        # Both names at once: the old one is then an unknown key.
        ({"validation_eval_size": 70, "holdout_eval_size": 80}, "holdout_eval_size"),
    ],
)
def test_the_renamed_knob_keeps_its_validation(params, problem):
    for name in STEPPING:
        with pytest.raises(ValidationError, match=problem):
            validate_params(name, params)


def test_methods_without_a_stop_rule_refuse_its_knobs():
    for name in ("finetune", "random_labels", "retrain"):
        for key in ("stop", "validation_eval_size", "holdout_eval_size"):
            with pytest.raises(ValidationError, match=key):
                validate_params(name, {key: 500 if key != "stop" else "none"})
