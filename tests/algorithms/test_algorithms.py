from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from radpath.algorithms import ALGORITHMS, Algorithm, register_algorithm
from radpath.algorithms.base import MODALITIES, malignancy_target, masked_bce, modality_rows
from radpath.algorithms.config import TileMixSettings
from radpath.algorithms.irm import IrmSettings
from radpath.algorithms.mixstyle import MixStyleSettings
from radpath.augment import TileMix
from radpath.errors import RadpathError
from tests.algorithms import only, tiny_algorithm
from tests.models import random_batch

NAMES = ALGORITHMS.names()
B = 4


def _snapshot(algorithm: Algorithm) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in algorithm.named_parameters()}


def _assert_finite_logs(logs: dict[str, float]) -> None:
    assert "loss" in logs
    for name, value in logs.items():
        assert type(value) is float, f"{name} is a {type(value).__name__}, not a float"
        assert math.isfinite(value), f"{name} = {value}"


def test_every_expected_algorithm_is_registered() -> None:
    assert {"erm", "irm", "mixstyle", "coral", "groupdro", "paper"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_update_returns_finite_floats_and_changes_parameters(name: str) -> None:
    algorithm = tiny_algorithm(name)
    before = _snapshot(algorithm)
    _assert_finite_logs(algorithm.update(random_batch()))
    after = dict(algorithm.named_parameters())
    for key in ("model.heads.fused.", "model.backbone.encoders.shared.blocks.0.",
                "model.backbone.patch_embed.mammo.", "model.backbone.patch_embed.histo."):
        changed = [not torch.equal(before[n], after[n]) for n in before if n.startswith(key)]
        assert changed and any(changed), f"{name}: no parameter under {key} moved"
    assert int(algorithm.steps_done) == 1


def test_update_trains_every_module_even_when_only_one_was_in_eval_mode() -> None:
    algorithm = tiny_algorithm("erm")
    algorithm.model.heads["fused"].eval()  # the top module still says training
    algorithm.update(random_batch())
    assert all(m.training for m in algorithm.modules())
    algorithm.eval()
    algorithm.update(random_batch())
    assert all(m.training for m in algorithm.modules())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("training", [True, False])
def test_predict_gives_probabilities_and_keeps_the_mode(name: str, training: bool) -> None:
    algorithm = tiny_algorithm(name).train(training)
    predictions = algorithm.predict(random_batch())
    assert algorithm.training is training
    assert all(m.training is training for m in algorithm.modules())
    for modality in (*MODALITIES, "fused"):
        prob = predictions[f"{modality}_prob"]
        assert prob.shape == (B,) and not prob.requires_grad
        assert torch.all((prob >= 0) & (prob <= 1))
    assert int(algorithm.steps_done) == 0  # predicting is not a training step


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("modality", MODALITIES)
def test_a_batch_with_one_modality_trains_and_predicts(name: str, modality: str) -> None:
    batch = only(random_batch(), modality)
    algorithm = tiny_algorithm(name)
    _assert_finite_logs(algorithm.update(batch))
    predictions = algorithm.predict(batch)
    assert all(torch.isfinite(predictions[f"{m}_prob"]).all() for m in (*MODALITIES, "fused"))
    other = "histo" if modality == "mammo" else "mammo"
    assert torch.all(predictions[f"{other}_feat"] == 0)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_and_batches_give_identical_losses(name: str) -> None:
    batch = random_batch(seed=1)
    logs, predictions = [], []
    for _ in range(2):
        algorithm = tiny_algorithm(name, seed=0)
        logs.append(algorithm.update(batch))
        predictions.append(algorithm.predict(batch)["fused_prob"])  # after the same step
    assert logs[0] == logs[1]
    torch.testing.assert_close(predictions[0], predictions[1], rtol=0, atol=0)


def test_paper_reports_contrastive_and_irm_terms() -> None:
    logs = tiny_algorithm("paper").update(random_batch())
    assert {"contrastive", "irm", "fused_bce", "loss"} <= set(logs)
    assert logs["contrastive"] > 0  # units 0 and 3 are true pairs


def test_paper_with_the_contrastive_weight_zero_skips_the_term() -> None:
    from radpath.algorithms.config import LossWeights

    algorithm = tiny_algorithm("paper", weights=LossWeights(contrastive=0.0))

    def refuse(*args, **kwargs):
        raise AssertionError("the contrastive loss ran with its weight 0")

    algorithm.contrastive.forward = refuse
    logs = algorithm.update(random_batch())
    assert logs["contrastive"] == 0.0 and math.isfinite(logs["loss"])


def test_paper_logit_scale_stays_clamped_under_a_huge_learning_rate() -> None:
    algorithm = tiny_algorithm("paper")
    algorithm._optimizer = algorithm.make_optimizer(lr=1e3)
    scale = algorithm.contrastive.logit_scale
    # Always push the scale up, whatever the batch: only the clamp can then hold it.
    scale.register_hook(lambda grad: torch.full_like(grad, -1.0))
    bound = math.log(100.0)
    for seed in range(6):
        algorithm.update(random_batch(seed=seed))
        assert float(scale.detach()) == pytest.approx(bound)
        assert float(algorithm.contrastive.scale().detach()) <= 100.0 + 1e-4


@pytest.mark.parametrize("name", ["irm", "paper"])
def test_irm_weight_is_one_until_annealing_then_the_full_weight(name: str) -> None:
    algorithm = tiny_algorithm(name, irm=IrmSettings(weight=7.0, anneal_steps=2))
    batch = random_batch()
    weights = []
    for _ in range(4):
        weights.append(algorithm.irm_weight())
        logs = algorithm.update(batch)
    assert weights == [1.0, 1.0, 7.0, 7.0]
    early = tiny_algorithm(name, irm=IrmSettings(weight=7.0, anneal_steps=2)).state_dict()
    algorithm.load_state_dict(early)  # as if resumed from an early checkpoint
    assert algorithm.irm_weight() == 1.0
    early["steps_done"].fill_(2)
    algorithm.load_state_dict(early)
    assert algorithm.irm_weight() == 7.0
    assert int(algorithm.steps_done) == 2
    assert "irm" in logs


def test_irm_loss_is_divided_by_the_weight_after_annealing() -> None:
    algorithm = tiny_algorithm("irm", irm=IrmSettings(weight=7.0, anneal_steps=0)).eval()
    _, terms = algorithm.compute_loss(random_batch())
    logs = {name: float(value) for name, value in terms.items()}
    w = algorithm.config.weights
    weighted = (logs["mammo_bce"] * w.mammo + logs["histo_bce"] * w.histo
                + logs["fused_bce"] * w.fused + logs["grade"] * w.grade
                + logs["localisation"] * w.localisation + logs["irm"] * 7.0)
    assert logs["loss"] == pytest.approx(weighted / 7.0, rel=1e-5)


@pytest.mark.parametrize("name", ["irm", "paper"])
def test_irm_refuses_a_single_domain(name: str) -> None:
    with pytest.raises(ValueError, match="at least two domains"):
        tiny_algorithm(name, domains=["only"])


@pytest.mark.parametrize("name", ["mixstyle", "paper"])
def test_mixstyle_mixes_in_training_and_is_identity_at_eval(name: str) -> None:
    algorithm = tiny_algorithm(name, mixstyle=MixStyleSettings(p=1.0)).train()
    batch = random_batch()
    with torch.no_grad():
        outputs = []
        for seed in (1, 2, 1):
            algorithm.mixstyle.reseed(seed)
            outputs.append(algorithm(batch)["fused_logit"])
        plain = algorithm.model(batch)["fused_logit"]
    assert not torch.allclose(outputs[0], outputs[1])
    assert not torch.allclose(outputs[0], plain)
    torch.testing.assert_close(outputs[0], outputs[2], rtol=0, atol=0)
    first, second = algorithm.predict(batch), algorithm.predict(batch)
    torch.testing.assert_close(first["fused_prob"], second["fused_prob"], rtol=0, atol=0)
    torch.testing.assert_close(first["fused_prob"], torch.sigmoid(plain), rtol=0, atol=0)
    assert algorithm.training


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"mixstyle", "paper"}))
def test_algorithms_without_mixstyle_have_none(name: str) -> None:
    assert tiny_algorithm(name).mixstyle is None


def _group_losses(algorithm: Algorithm, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (modality, domain) BCE losses that Group DRO weighs, in its group order."""
    with torch.no_grad():
        out = algorithm.model(batch)
    losses = []
    for modality in MODALITIES:
        logits, targets, domains, _ = modality_rows(out, batch, modality)
        for domain in range(algorithm.domain_count):
            chosen = domains == domain
            assert chosen.any(), "every group needs examples for this test"
            losses.append(F.binary_cross_entropy_with_logits(logits[chosen], targets[chosen]))
    return torch.stack(losses)


def test_groupdro_weights_move_toward_the_group_with_the_higher_loss() -> None:
    algorithm = tiny_algorithm("groupdro", groupdro={"eta": 1.0})
    batch = random_batch(units=8, seed=3)
    torch.testing.assert_close(algorithm.robust.q, torch.full((4,), 0.25))
    losses = _group_losses(algorithm, batch)
    algorithm.update(batch)
    q = algorithm.robust.q  # a new tensor each step
    worst, best = int(losses.argmax()), int(losses.argmin())
    assert worst != best
    assert float(q[worst]) > 0.25 > float(q[best])
    assert int(q.argmax()) == worst
    torch.testing.assert_close(q, torch.softmax(losses, dim=0))  # q_0 uniform, eta = 1
    algorithm.eval()
    algorithm.compute_loss(batch)  # evaluation never moves the weights
    torch.testing.assert_close(algorithm.robust.q, q, rtol=0, atol=0)


def test_registry_refuses_a_duplicate_name() -> None:
    original = ALGORITHMS.get("erm")

    class Impostor(Algorithm):
        pass

    with pytest.raises(RadpathError, match="already registered"):
        register_algorithm("erm")(Impostor)
    assert ALGORITHMS.get("erm") is original


def test_tile_loss_is_the_bce_of_every_valid_tile_against_its_unit_label() -> None:
    from radpath.algorithms.config import LossWeights

    algorithm = tiny_algorithm("erm", weights=LossWeights(histo_tiles=2.0))
    batch = random_batch()
    out = algorithm(batch)
    terms = algorithm.supervised_terms(out, batch)
    weight, value = terms["histo_tile_bce"]
    rows, cols = torch.nonzero(batch["histo_mask"] & batch["has_histo"][:, None],
                               as_tuple=True)
    expected = F.binary_cross_entropy_with_logits(out["histo_tile_logit"][rows, cols],
                                                  batch["malignant"][rows])
    assert weight == 2.0
    torch.testing.assert_close(value, expected)
    assert "histo_tile_bce" not in tiny_algorithm("erm").supervised_terms(out, batch)


def test_view_loss_is_the_bce_of_every_labelled_view_against_its_own_label() -> None:
    from radpath.algorithms.config import LossWeights

    algorithm = tiny_algorithm("erm", weights=LossWeights(mammo_views=0.5))
    batch = random_batch()
    # Unit 0: one view, malignant; unit 2: no mammograms (its labels must not count);
    # unit 3: a malignant film beside a film of unknown label.
    batch["mammo_view_label"] = torch.tensor([[2, -1], [0, 1], [2, 2], [-1, 2]])
    out = algorithm(batch)
    weight, value = algorithm.supervised_terms(out, batch)["mammo_view_bce"]
    logits = out["mammo_view_logit"]
    expected = F.binary_cross_entropy_with_logits(
        torch.stack([logits[0, 0], logits[1, 0], logits[1, 1], logits[3, 1]]),
        torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert weight == 0.5
    torch.testing.assert_close(value, expected)
    assert "mammo_view_bce" not in tiny_algorithm("erm").supervised_terms(out, batch)
    unlabelled = {k: v for k, v in batch.items() if k != "mammo_view_label"}
    assert "mammo_view_bce" not in algorithm.supervised_terms(out, unlabelled)


def test_ordinal_mammography_target_asks_the_same_score_for_a_finding_at_a_lower_cut() -> None:
    algorithm = tiny_algorithm("erm", mammo_target="ordinal")
    batch = random_batch()
    batch["label"] = torch.tensor([0, 1, 2, 1])  # normal, benign, malignant, benign
    batch["malignant"] = (batch["label"] == 2).float()
    with torch.no_grad():
        algorithm.finding_margin.fill_(torch.log(torch.expm1(torch.tensor(1.5))))
    out = algorithm(batch)
    terms = algorithm.supervised_terms(out, batch)
    rows = batch["has_mammo"]
    finding = torch.tensor([0.0, 1.0, 1.0, 1.0])
    expected = F.binary_cross_entropy_with_logits(out["mammo_logit"][rows] + 1.5, finding[rows])
    weight, value = terms["mammo_finding_bce"]
    assert weight == algorithm.config.weights.mammo
    torch.testing.assert_close(value, expected)
    # The malignancy term is untouched, and the margin learns from the finding term.
    plain = tiny_algorithm("erm").supervised_terms(out, batch)
    torch.testing.assert_close(terms["mammo_bce"][1], plain["mammo_bce"][1])
    assert "mammo_finding_bce" not in plain
    value.backward()
    assert algorithm.finding_margin.grad is not None and algorithm.finding_margin.grad != 0


@pytest.mark.parametrize("target", ["malignant", "finding"])
def test_weak_localisation_term_asks_the_most_suspicious_view_for_its_target(target: str
                                                                              ) -> None:
    algorithm = tiny_algorithm("erm", lesion_supervision=False, localisation_target=target)
    batch = random_batch()
    batch["label"] = torch.tensor([0, 1, 2, 1])  # normal, benign, malignant, benign
    batch["malignant"] = (batch["label"] == 2).float()
    out = algorithm(batch)
    most_suspicious = out["view_logit"].masked_fill(~batch["mammo_mask"], -1e4).amax(dim=1)
    positive = torch.tensor([0.0, 0.0, 1.0, 0.0] if target == "malignant"
                            else [0.0, 1.0, 1.0, 1.0])
    rows = batch["has_mammo"]
    expected = F.binary_cross_entropy_with_logits(most_suspicious[rows], positive[rows])
    torch.testing.assert_close(algorithm.localisation_loss(out, batch), expected)


def test_lesion_term_is_the_weighted_bce_over_the_tokens_of_views_with_known_maps() -> None:
    algorithm = tiny_algorithm("erm", lesion_supervision=True)
    batch = random_batch()
    batch["lesion_known"] = batch["mammo_mask"] & torch.tensor([True, False, True, True])[:, None]
    out = algorithm(batch)
    weak = tiny_algorithm("erm", lesion_supervision=False).localisation_loss(out, batch)
    known = batch["lesion_known"] & batch["mammo_mask"]
    scores, maps = out["token_scores"][known], batch["lesion_map"][known]
    positives = maps.sum()
    expected = F.binary_cross_entropy_with_logits(
        scores, maps, pos_weight=((maps.numel() - positives) / positives).clamp(max=50.0))
    torch.testing.assert_close(algorithm.localisation_loss(out, batch), weak + expected)
    batch["lesion_known"][:] = False  # no map known: the weak term alone
    torch.testing.assert_close(algorithm.localisation_loss(out, batch), weak)


def test_masked_bce_is_the_mean_over_the_mask_and_zero_without_it() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0], requires_grad=True)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    mask = torch.tensor([True, False, True, False])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(0.5))) / 2
    assert masked_bce(logits, target, mask).item() == pytest.approx(expected, rel=1e-6)
    # The unselected entries get no gradient, not even from a target they disagree with.
    (grad,) = torch.autograd.grad(masked_bce(logits, target, mask), logits)
    assert grad[1] == 0 and grad[3] == 0 and grad[0] != 0
    nothing = masked_bce(logits, target, torch.zeros(4, dtype=torch.bool))
    assert nothing.item() == 0.0 and nothing.requires_grad


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_tile_mixing_trains_the_histo_terms_against_the_mixed_targets(mode: str) -> None:
    batch = random_batch()
    batch["label"] = torch.tensor([2, 0, 0, 2])  # units 0, 2, 3 have tiles: both classes
    batch["malignant"] = (batch["label"] == 2).float()
    settings = TileMixSettings(p=1.0, alpha=0.4, mode=mode)
    algorithm = tiny_algorithm("erm", tile_mix=settings, weights={"histo_tiles": 1.0})
    _, logs = algorithm.compute_loss(batch)
    mixed = TileMix(p=1.0, alpha=0.4, mode=mode, seed=0).train()(batch)
    target = mixed["histo_target"]
    assert not torch.equal(target, batch["malignant"])  # the batch was mixed
    out = algorithm(mixed)
    known = batch["label"] >= 0
    histo = known & batch["has_histo"]
    expected = {
        "histo_bce": masked_bce(out["histo_logit"], target, histo),
        "fused_bce": masked_bce(out["fused_logit"], target, known),
        "mammo_bce": masked_bce(out["mammo_logit"], batch["malignant"],
                                known & batch["has_mammo"]),
        "histo_tile_bce": masked_bce(out["histo_tile_logit"],
                                     target[:, None].expand_as(out["histo_tile_logit"]),
                                     batch["histo_mask"] & histo[:, None]),
    }
    for name, value in expected.items():
        assert torch.isclose(logs[name], value.detach(), atol=1e-6), name
    assert torch.equal(malignancy_target(mixed, "mammo"), batch["malignant"])
    assert torch.equal(malignancy_target(mixed, "histo"), target)


def test_tile_mixing_is_off_by_default_and_at_p_zero() -> None:
    assert tiny_algorithm("erm").tile_mix is None
    assert tiny_algorithm("erm", tile_mix=TileMixSettings(p=0.0)).tile_mix is None
