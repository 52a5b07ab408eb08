"""What-if on simulated revenue jobs with known faults (no Spark needed).

The simulation draws the same units for the same seed, so the current run *without* its fault is
known: reverting the faulty mechanism must give back that run's metric.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from spark_causal.attribution import AttributionConfig, attribute_samples
from spark_causal.errors import UnknownOutputError
from spark_causal.whatif import WhatIf, what_if, what_if_samples
from tests.simulate import make_pair
from tests.test_report import write_store

FAST = AttributionConfig(n_bootstrap=10)
TARGET = "report.revenue"


def clean_current_value(seed: int = 11) -> float:
    _, b, c = make_pair("aa", seed, n=3000)
    return attribute_samples(c.graph, b, c, TARGET, config=FAST).current_value


@pytest.mark.parametrize("fault,cause", [("fx_corrupt", "fx.rate"), ("formula", "report.amount_usd")])
def test_reverting_a_lookup_or_a_code_change_gives_back_the_clean_run(fault, cause):
    g, b, c = make_pair(fault, 11, n=3000)
    w = what_if_samples(g, b, c, TARGET, revert=[cause], config=FAST)
    clean = clean_current_value()
    assert w.counterfactual_value == pytest.approx(clean, rel=1e-6)
    assert w.ci_low <= w.counterfactual_value <= w.ci_high and w.ci_high > w.ci_low
    assert cause in w.changed and not w.warnings
    assert w.effect == pytest.approx(w.counterfactual_value - w.current_value)


def test_reverting_a_source_drift():
    g, b, c = make_pair("amount_drift", 11, n=3000)
    w = what_if_samples(g, b, c, TARGET, revert=["orders.amount"], config=FAST)
    clean = clean_current_value()
    assert abs(w.counterfactual_value - clean) < 0.05 * clean
    assert abs(w.counterfactual_value - clean) < abs(w.current_value - clean) / 3


def test_nothing_volume_and_unchanged_mechanisms():
    g, b, c = make_pair("volume", 11, n=3000)
    same = what_if_samples(g, b, c, TARGET, revert=[], config=FAST)
    assert same.counterfactual_value == same.current_value == same.ci_low == same.ci_high
    vol = what_if_samples(g, b, c, TARGET, revert=["orders.__rows__"], config=FAST)
    res = attribute_samples(g, b, c, TARGET, config=FAST)
    rows = res.details["rows"]
    assert vol.counterfactual_value == pytest.approx(res.current_value * rows["baseline"] / rows["current"])
    assert abs(vol.counterfactual_value - res.baseline_value) < abs(res.change) / 2
    quiet = what_if_samples(g, b, c, TARGET, revert=["orders.country"], config=FAST)
    assert quiet.warnings and "did not change significantly" in quiet.warnings[0]
    assert abs(quiet.effect) < 0.05 * quiet.current_value
    mean = what_if_samples(g, b, c, TARGET, revert=["orders.__rows__"], agg="mean", config=FAST)
    assert mean.counterfactual_value == mean.current_value and "mean" in mean.warnings[0]


def test_unknown_ids_are_refused_with_the_list_of_mechanisms():
    g, b, c = make_pair("fx_corrupt", 11, n=2000)
    with pytest.raises(UnknownOutputError) as err:
        what_if_samples(g, b, c, TARGET, revert=["report.country"], config=FAST)
    assert "fx.rate" in str(err.value) and "orders.__rows__" in str(err.value)
    # the attribution is unaffected by a refused what-if
    res = attribute_samples(g, b, c, TARGET, config=FAST)
    assert res.attributions[0].node == "fx.rate"


def test_the_result_is_a_frozen_record_with_a_sentence(tmp_path):
    g, b, c = make_pair("fx_corrupt", 11, n=2000)
    root = write_store(tmp_path / "store", [b, c])
    w = what_if(root, "baseline", "current", TARGET, revert=["fx.rate"], config=FAST)
    assert isinstance(w, WhatIf) and w.reverted == ("fx.rate",) and w.baseline_run == "baseline"
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.counterfactual_value = 0.0  # type: ignore[misc]
    text = w.summary()
    assert text.startswith("If fx.rate had its baseline mechanism, revenue would be") and "instead of" in text
    d = json.loads(json.dumps(w.to_dict()))
    assert d["counterfactual_value"] == pytest.approx(w.counterfactual_value) and d["reverted"] == ["fx.rate"]
    assert text in w._repr_html_() or "If fx.rate" in w._repr_html_()
    again = what_if(root, "baseline", "current", TARGET, revert=["fx.rate"], config=FAST)
    assert again == w  # seeded: the same question gives the same answer
