"""One selection rule for the runner, `dnntune best`, the final model and the report."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from dnntune.report._view import StudyView
from dnntune.search.selection import best_trial, sign, top_trials, trial_value

optuna.logging.set_verbosity(optuna.logging.ERROR)
DIST = {"x": FloatDistribution(0, 1)}


def study_of(direction, *trials):
    study = optuna.create_study(direction=direction)
    for t in trials:
        study.add_trial(t)
    return study


def complete(value, log_loss, x=0.5):
    return create_trial(state=TrialState.COMPLETE, value=value, params={"x": x}, distributions=DIST,
                        user_attrs={"val": {"accuracy": value, "log_loss": log_loss}, "recipe": {}})


def pruned(*values):
    return create_trial(state=TrialState.PRUNED, params={"x": 0.5}, distributions=DIST,
                        intermediate_values=dict(enumerate(values, 1)), user_attrs={"recipe": {}})


def test_sign_is_the_one_interpretation_of_a_direction():
    assert sign("maximize") == 1 and sign("minimize") == -1
    with pytest.raises(ValueError):
        sign("max")


@pytest.mark.parametrize("direction, good, bad", [("minimize", (0.9, 0.1), (5.0, 4.0)),
                                                   ("maximize", (0.2, 0.9), (0.1, 0.3))])
def test_with_every_trial_pruned_the_best_reported_value_wins_in_either_direction(direction, good, bad):
    # a regression study cut by its timeout: nothing completed; the fallback must not pick the worst trial
    study = study_of(direction, pruned(*bad), pruned(*good))
    best = best_trial(study, [direction])
    assert best.number == 1
    assert trial_value(best, direction) == (min(good) if direction == "minimize" else max(good))


def test_a_complete_trial_outranks_a_pruned_one_with_a_better_curve():
    study = study_of("maximize", pruned(0.99), complete(0.5, 1.0))
    assert best_trial(study, ["maximize"]).number == 1


def test_ties_of_the_value_go_to_the_lower_validation_log_loss_and_top_k_is_ordered():
    study = study_of("maximize", complete(1.0, 0.30), complete(1.0, 0.10), complete(0.9, 0.01),
                     complete(1.0, 0.20))
    assert [t.number for t in top_trials(study, ["maximize"])] == [1, 3, 0, 2]
    assert [t.number for t in top_trials(study, ["maximize"], k=2)] == [1, 3]


def test_the_report_names_the_same_best_trial_as_the_run_when_the_metric_ties():
    study = study_of("maximize", complete(1.0, 0.30), complete(1.0, 0.10))
    study.set_user_attr("dnntune:directions", ["maximize"])
    study.set_user_attr("dnntune:objectives", ["accuracy"])
    view = StudyView(study)
    assert view.best.number == best_trial(study, ["maximize"]).number == 1
    assert [t.number for t in view.ranked] == [1, 0]


def test_multi_objective_best_is_on_the_pareto_front():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.9, 100.0], [0.95, 1000.0], [0.8, 10.0], [0.85, 2000.0]):  # the last is dominated
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=values, params={"x": 0.5}, distributions=DIST))
    ranked = top_trials(study, ["maximize", "minimize"])
    assert [t.number for t in ranked] == [1, 0, 2, 3]
    assert best_trial(study, ["maximize", "minimize"]).number == 1
