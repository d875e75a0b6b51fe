"""The causal check's known answer, without Ray (slow): a null city beside two others.

Each non-null synthetic city differs from the others only by its own objects; the null
city has none. A model that tells them apart must use each city's own objects, so
removing them must cost it more than removing as many pixels elsewhere, and more than
removing a shared class (sky, road). In the null city, removing a shared class must cost
less than each model's decisive own object costs its city. What does *not* hold, and is
not asserted: that no removal in the null city stands out from its control — a null
city is known by its ordinary street, and a street with its road (or a building) filled
in is one no model saw in training; its control, as many pixels elsewhere, breaks the
scene less. ``bench/known_answer.py`` runs the check for every architecture and seed;
this test runs Simple (the README quotes the whole run; Simpler, tested here before,
left CI for its minutes).

The same model's R_p intervals are calibrated: test splits of 8 places per city, drawn
200 times from 200 fresh places per city of the same cities, give intervals that should
cover R_p on all 200 places about 95 % of the time.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from known_answer import (  # noqa: E402
    METHODS,
    OWN,
    calibration,
    corpus,
    image_sums,
    known_answer,
    own_object_coverage,
    population,
    resamples,
    rp_verdict,
    train,
    verdict,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return corpus(tmp_path_factory.mktemp("null-city"))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return population(tmp_path_factory.mktemp("fresh-places"))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["simple"])
def test_removing_a_citys_own_objects_costs_the_model_and_a_null_city_has_none(data, fresh, arch):
    torch.set_num_threads(2)
    boot = resamples(data)
    answer = known_answer(data, arch, 0, boot=boot)
    # the claims are made for models that work; how well one works depends on the CPU it
    # trained on (float rounding of its kernels): simple-s0 reached 0.958 on the AMD EPYC
    # of the README's table and 0.771 on an Intel Xeon (model 167), every claim holding
    assert answer.acc > 0.75, answer.acc
    _r_p_intervals_are_calibrated_and_a_wrong_top_is_not_settled(answer, fresh, boot)
    causal = answer.causal
    v = verdict(causal)
    for city in ("towerville", "signburg"):
        # its most decisive own object costs more than its control (the interval says
        # so), and more than removing sky or road
        assert v[city]["above_control"] and v[city]["above_shared"], (city, v, causal)
    # in the null city nothing costs as much as what decides the others
    assert v["nullham"]["null_below_decisive"], (v, causal)


def _r_p_intervals_are_calibrated_and_a_wrong_top_is_not_settled(answer, fresh, boot):
    cal = calibration(image_sums(answer.model, fresh), reps=200)
    assert set(cal.method) == set(METHODS) and set(cal.city) == {
        "towerville",
        "signburg",
        "nullham",
    }
    cover = cal.groupby("method").coverage.mean()
    # the study's intervals: near the nominal 0.95 (the README quotes 0.92-0.94 over four
    # models; ratio estimators from 8 clusters run a little short)
    assert cover["place, expanded"] >= 0.88, cal
    # what it guards against: views of a place are alike, so resampling images is too
    # sure; the plain percentile interval is too narrow for 8 places
    assert cover["image, expanded"] < cover["place, expanded"] - 0.04, cover
    assert cover["place, plain"] < cover["place, expanded"] - 0.02, cover
    tops = rp_verdict([answer], boot)["tops"]
    wrong = tops[tops.city.isin(list(OWN)) & ~tops.own]
    # a city whose top object by R_p is a shared one is not named with confidence
    assert not wrong.settled.any(), wrong


@pytest.mark.slow
def test_resnet18s_finer_layer_puts_more_of_a_citys_own_objects_in_its_explanations(data):
    """Issue 23's known answer: ResNet18's layer3 (6×6 at 96 px) against the paper's
    layer4 (3×3). The share of the explanation that is the city's own objects rises; the
    share of the objects covered (R_p of the own objects) does not — the finer map is
    also smaller — and is not claimed."""
    torch.set_num_threads(2)
    model = train(data, "resnet18", 0)
    last = own_object_coverage(image_sums(model, data, "gradcam", "layer4"))
    finer = own_object_coverage(image_sums(model, data, "gradcam", "layer3"))
    for city in OWN:
        assert finer[city]["own_share"] > last[city]["own_share"] + 0.05, (city, finer, last)
        assert finer[city]["area"] < last[city]["area"], (city, finer, last)
