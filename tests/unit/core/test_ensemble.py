"""core/ensemble.py: the answer is the weighted mean of the members' posteriors (or, with
``combine: product``, their weighted geometric mean renormalised); in the one
training loop each member learns exactly as it would alone, at its own learning rate; bad
members are refused naming the entry; a model directory keeps the weights its options give."""

from __future__ import annotations

import pytest
import torch

from distill.config import TrainConfig
from distill.core.checkpoint import ModelSpec, load_model_dir, save_model_dir
from distill.core.ensemble import check_members, mixture_logits
from distill.core.fit import start_fit, train_epoch
from distill.core.models import build_model
from test_fit import BATCH, CLASSES, CPU, NO_AUGMENT, ROWS, STAGE, tone_batches  # the one-loop tests' tone batches

TINIES = [{"name": "tiny", "weight": 1.0}, {"name": "tiny", "options": {"channels": 4}, "weight": 3.0}]


def test_the_answer_is_the_weighted_mean_of_the_members_posteriors():
    torch.manual_seed(0)
    model = build_model("ensemble", CLASSES, {"members": TINIES, "combine": "mean"}).eval()
    x = torch.randn(5, 4000)
    a, b = (torch.softmax(m(x), -1) for m in model.net.members)
    assert model.net.weights == [0.25, 0.75]
    assert torch.allclose(torch.softmax(model(x), -1), 0.25 * a + 0.75 * b, atol=1e-6)
    assert torch.allclose(model(x).exp().sum(-1), torch.ones(5), atol=1e-5)  # log-posteriors: softmax is a no-op
    logits = torch.tensor([[[0.0, 50.0]], [[50.0, 0.0]]])  # confident members: no overflow
    assert torch.allclose(mixture_logits(logits, [0.5, 0.5]).exp(), torch.tensor([[0.5, 0.5]]))


def test_the_product_answer_is_the_renormalised_weighted_geometric_mean():
    torch.manual_seed(0)
    model = build_model("ensemble", CLASSES, {"members": TINIES, "combine": "product"}).eval()
    x = torch.randn(5, 4000)
    a, b = (torch.softmax(m(x), -1) for m in model.net.members)
    pooled = a ** 0.25 * b ** 0.75
    assert torch.allclose(torch.softmax(model(x), -1), pooled / pooled.sum(-1, keepdim=True), atol=1e-6)
    assert torch.allclose(model(x).exp().sum(-1), torch.ones(5), atol=1e-5)
    assert not torch.allclose(model(x), build_model("ensemble", CLASSES, {"members": TINIES}).eval()(x))
    # a class one confident member rules out stays out, where the mean keeps half of it
    logits = torch.tensor([[[0.0, 50.0]], [[50.0, 50.0]]])
    assert mixture_logits(logits, [0.5, 0.5], "product").exp()[0, 0] < 1e-9
    assert mixture_logits(logits, [0.5, 0.5], "mean").exp()[0, 0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="combine must be one of mean, product, got 'sum'"):
        build_model("ensemble", CLASSES, {"members": TINIES, "combine": "sum"})


def test_in_training_each_member_learns_as_it_would_alone():
    train = TrainConfig(batch_size=BATCH, lr=0.05, augment={"enabled": False})
    members = [{"name": "tiny"}, {"name": "tiny", "options": {"channels": 4}, "lr_scale": 0.1}]
    torch.manual_seed(0)
    ensemble = start_fit(build_model("ensemble", CLASSES, {"members": members}), train, epochs=2,
                         steps_per_epoch=ROWS // BATCH, device=CPU)
    alone = []
    for member, m in zip(ensemble.net.net.members, members):
        solo = build_model("tiny", CLASSES, m.get("options"))
        solo.load_state_dict(member.state_dict())  # the same initial weights
        alone.append(start_fit(solo, train.model_copy(update={"lr": 0.05 * m.get("lr_scale", 1.0)}), epochs=2,
                               steps_per_epoch=ROWS // BATCH, device=CPU))
    assert [g["lr"] for g in ensemble.optimizer.param_groups] == pytest.approx([g.optimizer.param_groups[0]["lr"]
                                                                                for g in alone])
    total, seen = train_epoch(ensemble, tone_batches(1, 0), STAGE, train, NO_AUGMENT, epoch=0, rank=0, device=CPU)
    solo_totals = [train_epoch(f, tone_batches(1, 0), STAGE, train, NO_AUGMENT, epoch=0, rank=0, device=CPU)[0]
                   for f in alone]
    assert seen == ROWS and total == pytest.approx(sum(solo_totals), rel=1e-5)  # the loss is the members' sum
    for member, fit in zip(ensemble.net.net.members, alone):
        for (name, p), q in zip(member.named_parameters(), fit.net.parameters()):
            assert torch.allclose(p, q, atol=1e-6), name
    moved = [m.net.conv1.weight for m in build_model("ensemble", CLASSES, {"members": members}).net.members]
    assert not torch.allclose(ensemble.net.net.members[0].net.conv1.weight, moved[0])  # it did train


@pytest.mark.parametrize("members, error", [
    ([{"name": "tiny"}], r"at least two"),
    ("tiny", r"at least two"),
    ([{"name": "tiny"}, {"options": {}}], r"members\[1\]: a mapping with a network's name"),
    ([{"name": "tiny"}, {"name": "nope"}], r"members\[1\]: unknown model 'nope'; registered: .*res8"),
    ([{"name": "tiny"}, {"name": "ensemble"}], r"members\[1\]: an ensemble cannot hold an ensemble"),
    ([{"name": "tiny", "weight": 0}, {"name": "tiny"}], r"members\[0\]\.weight: a positive number, got 0"),
    ([{"name": "tiny", "lr_scale": "x"}, {"name": "tiny"}], r"members\[0\]\.lr_scale: a positive number"),
    ([{"name": "tiny", "wieght": 1}, {"name": "tiny"}], r"members\[0\]: unknown keys \['wieght'\]"),
    ([{"name": "tiny", "options": 3}, {"name": "tiny"}], r"members\[0\]\.options: a mapping"),
])
def test_bad_members_are_refused_naming_the_entry(members, error):
    with pytest.raises(ValueError, match=error):
        check_members(members)


def test_a_model_directory_rebuilds_the_ensemble_with_its_weights(tmp_path):
    torch.manual_seed(0)
    model = build_model("ensemble", CLASSES, {"members": TINIES}).eval()
    spec = ModelSpec("ensemble", {"members": TINIES}, ["a", "b", "c", "d"], 250, model.features.cfg.model_dump())
    save_model_dir(tmp_path, model, spec)
    loaded, _ = load_model_dir(tmp_path)
    x = torch.randn(3, 4000)
    assert torch.equal(loaded(x), model(x)) and loaded.net.weights == [0.25, 0.75]
    assert loaded.net.combine == "mean"  # a model directory without combine (written before it) answers as it did
    product = build_model("ensemble", CLASSES, {"members": TINIES, "combine": "product"}).eval()
    save_model_dir(tmp_path / "product", product, ModelSpec("ensemble", {"members": TINIES, "combine": "product"},
                                                            ["a", "b", "c", "d"], 250, product.features.cfg.model_dump()))
    loaded, _ = load_model_dir(tmp_path / "product")
    assert loaded.net.combine == "product" and torch.equal(loaded(x), product(x))


def test_unknown_offset_moves_the_unknown_class_alone_and_a_model_directory_keeps_it(tmp_path):
    labels = ["_silence_", "_unknown_", "yes", "no"]
    torch.manual_seed(0)
    plain = build_model("ensemble", len(labels), {"members": TINIES, "combine": "product"}, labels=labels).eval()
    options = {"members": TINIES, "combine": "product", "unknown_offset": -2.0}
    moved = build_model("ensemble", len(labels), options, labels=labels).eval()
    moved.load_state_dict(plain.state_dict())
    x = torch.randn(6, 4000)
    before, after = plain(x).exp(), moved(x).exp()
    assert torch.allclose(after.sum(-1), torch.ones(6), atol=1e-5)
    assert (after[:, 1] < before[:, 1]).all()  # less of _unknown_ ...
    others = [0, 2, 3]  # ... and the other classes keep their ratios
    assert torch.allclose(after[:, others] / after[:, others].sum(-1, keepdim=True),
                          before[:, others] / before[:, others].sum(-1, keepdim=True), atol=1e-5)
    odds = lambda p: p[:, 1] / p[:, 2]  # noqa: E731
    assert torch.allclose(odds(after), odds(before) * torch.exp(torch.tensor(-2.0)), rtol=1e-4)
    spec = ModelSpec("ensemble", options, labels, 250, moved.features.cfg.model_dump())
    loaded, _ = load_model_dir(save_model_dir(tmp_path, moved, spec))
    assert loaded.net.unknown_offset == -2.0 and torch.equal(loaded(x), moved(x))
    moved.train()  # in training each member's logits, as before: the offset changes only the answer
    assert torch.equal(moved(x), plain.train()(x))


def test_unknown_offset_needs_an_unknown_class_and_a_number():
    with pytest.raises(ValueError, match=r"unknown_offset -1.0 moves the _unknown_ class, which this model's labels "
                                         r"\['a', 'b', 'c', 'd'\] lack"):
        build_model("ensemble", CLASSES, {"members": TINIES, "unknown_offset": -1.0}, labels=["a", "b", "c", "d"])
    build_model("ensemble", CLASSES, {"members": TINIES, "unknown_offset": 0.0}, labels=["a", "b", "c", "d"])  # off: fine
    for bad in ("-1", float("nan"), True):
        with pytest.raises(ValueError, match="unknown_offset must be a finite number"):
            build_model("ensemble", CLASSES, {"members": TINIES, "unknown_offset": bad})


def test_speeds_average_each_members_posteriors_over_the_input_played_at_each_speed(tmp_path):
    from distill.core.augment import change_speed
    torch.manual_seed(0)
    plain = build_model("ensemble", CLASSES, {"members": TINIES}).eval()
    options = {"members": TINIES, "speeds": [0.9, 1.0, 1.1]}
    viewed = build_model("ensemble", CLASSES, options).eval()
    viewed.load_state_dict(plain.state_dict())
    x = torch.randn(5, 4000)
    n = x.shape[0]
    by_member = [sum(torch.softmax(m(change_speed(x, torch.full((n,), s))), -1) for s in (0.9, 1.0, 1.1)) / 3
                 for m in plain.net.members]
    assert torch.allclose(viewed(x).exp(), 0.25 * by_member[0] + 0.75 * by_member[1], atol=1e-6)
    assert not torch.allclose(viewed(x), plain(x), atol=1e-3)  # the views change the answer
    # [1.0] is the input as it is: the same answer to the bit as an ensemble without the option
    as_is = build_model("ensemble", CLASSES, {"members": TINIES, "speeds": [1.0]}).eval()
    as_is.load_state_dict(plain.state_dict())
    assert torch.equal(as_is(x), plain(x))
    spec = ModelSpec("ensemble", options, ["a", "b", "c", "d"], 250, viewed.features.cfg.model_dump())
    loaded, _ = load_model_dir(save_model_dir(tmp_path, viewed, spec))
    assert loaded.net.speeds == [0.9, 1.0, 1.1] and torch.equal(loaded(x), viewed(x))
    viewed.train()  # training sees each input once, as before: the views change only the answer
    assert torch.equal(viewed(x), plain.train()(x))


@pytest.mark.parametrize("bad", [[], [0.0], [-1.0], ["fast"], [True], 1.1, [float("inf")]])
def test_bad_speeds_are_refused(bad):
    with pytest.raises(ValueError, match="speeds must be a list of positive playback speeds"):
        build_model("ensemble", CLASSES, {"members": TINIES, "speeds": bad})
