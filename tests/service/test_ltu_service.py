"""LTU through the service on digits: forget accuracy moves toward the holdout's, and bad
params answer 422 and store nothing."""

from __future__ import annotations

from tests.helpers.service_unlearning import assert_model_refused, unlearn_through_service


def test_ltu_through_the_service_moves_forget_accuracy_toward_holdout(client, admin, env):
    # The accuracy rule, which aims at what this test reads; under the default rule a
    # 50-sample forget set can already sit within one standard error of chance.
    run = unlearn_through_service(client, admin, "ltu", {"stop": "holdout_gap"})
    before, after = run.before, run.after
    assert before.forget > before.holdout  # the memorised gap to close
    assert after.forget < before.forget
    assert abs(after.forget - after.holdout) < abs(before.forget - before.holdout)
    assert after.test >= before.test - 0.03
    assert run.job["unlearner"]["name"] == "ltu"


def test_bad_params_answer_422_through_the_service_and_store_nothing(client, admin, env):
    mlp = {"name": "mlp", "params": {"hidden": [16]}}
    assert_model_refused(client, admin, mlp, {"name": "ltu", "params": {"retain_fraction": 2.0}})
