"""Numbers the data2vec-aqc model must get right (issue 3)."""
import math

import pytest
import torch

from aqc.models import Data2VecAQCConfig, data2vec_aqc_base, data2vec_aqc_tiny
from aqc.models.clustering import cluster_labels, cosine_kmeans, fast_pytorch_kmeans_labels, num_clusters_for
from aqc.models.losses import contrastive_logits, contrastive_loss, regression_loss
from aqc.models.masking import compute_span_mask
from aqc.models.negatives import sample_negative_indices
from aqc.models.quantizer import gumbel_temperature_at
from aqc.models.targets import build_targets, masked_instance_norm
from aqc.models.teacher import ema_decay_at


def _speech_like(batch, samples, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    x = torch.sin(2 * math.pi * 220 * t) * torch.sin(2 * math.pi * 3 * t) + 0.3 * torch.randn(batch, samples, generator=g)
    return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)


# ------------------------------------------------------------------------------------------ masking
def test_mask_coverage_near_49_percent_with_equal_counts():
    g = torch.Generator().manual_seed(0)
    lengths = torch.full((8,), 500)
    coverage = []
    for _ in range(50):
        mask = compute_span_mask(lengths, 500, 0.65, 10, generator=g)
        counts = mask.sum(1)
        assert (counts == counts[0]).all()
        coverage.append(counts.float().mean().item() / 500)
    mean = sum(coverage) / len(coverage)
    assert 0.44 < mean < 0.52, mean


def test_span_count_is_drawn_once_per_batch_without_padding():
    """compute_mask_indices draws one span count for the whole batch when nothing is padded, one per row
    otherwise. Single-frame spans at 2.5 expected spans per row: a batch-wide draw gives every row 3 spans
    half of the time; per-row draws almost never give all 16 rows 3 (the rows are cut to the smallest)."""
    def three_span_share(lengths):
        counts = [int(compute_span_mask(torch.tensor(lengths), 100, 0.025, 1, min_masks=1,
                                        generator=torch.Generator().manual_seed(s))[0].sum()) for s in range(40)]
        assert set(counts) <= {2, 3} or min(lengths) < 100
        return sum(c == 3 for c in counts) / len(counts)

    assert 0.25 < three_span_share([100] * 16) < 0.75
    assert three_span_share([100] * 15 + [99]) < 0.05  # padding: per row, as the reference


def test_mask_never_covers_padding():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([500, 120, 37])
    for _ in range(20):
        mask = compute_span_mask(lengths, 500, generator=g)
        for b, n in enumerate(lengths.tolist()):
            assert not mask[b, n:].any()
        assert mask.sum(1).min() >= 2


# -------------------------------------------------------------------------------------- schedules
def test_ema_decay_schedule():
    assert ema_decay_at(0) == pytest.approx(0.999)
    assert ema_decay_at(15000) == pytest.approx(0.99945)
    assert ema_decay_at(30000) == pytest.approx(0.9999)
    assert ema_decay_at(60000) == pytest.approx(0.9999)


def test_gumbel_temperature_schedule():
    assert gumbel_temperature_at(0) == pytest.approx(2.0)
    assert gumbel_temperature_at(300000) == pytest.approx(0.5)  # 2 * 0.999995^300k = 0.446 -> floor 0.5
    assert gumbel_temperature_at(100000) == pytest.approx(2 * 0.999995 ** 100000)
    model = data2vec_aqc_tiny()
    model.set_num_updates(100000)
    assert model.quantizer.temperature == pytest.approx(2 * 0.999995 ** 100000)


def test_teacher_update_moves_by_exact_ema_step_and_copies_pos_conv():
    torch.manual_seed(0)
    model = data2vec_aqc_tiny()
    with torch.no_grad():  # make student and teacher differ
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    before = {k: v.clone() for k, v in model.teacher.encoder.named_parameters()}
    student = {k: v.detach().clone() for k, v in model.encoder.named_parameters()}
    decay = model.update_teacher(15000)
    assert decay == pytest.approx(0.99945)
    for name, t in model.teacher.encoder.named_parameters():
        if name.startswith("pos_conv."):
            assert torch.equal(t, student[name]), name
        else:
            # exact in float64; fp32 storage allows one rounding step (about 1e-7 at these magnitudes)
            expected = before[name].double() + (1 - decay) * (student[name].double() - before[name].double())
            torch.testing.assert_close(t.double(), expected, rtol=0, atol=2.5e-7)
            assert not torch.equal(t, before[name]), name
    assert model.num_updates == 15000
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_state_dict_round_trip_keeps_teacher_and_update_count():
    torch.manual_seed(0)
    model = data2vec_aqc_tiny()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.05)
    model.update_teacher(1234)
    other = data2vec_aqc_tiny()
    other.load_state_dict(model.state_dict())
    assert other.num_updates == 1234
    assert other.quantizer.temperature == pytest.approx(model.quantizer.temperature)
    for (n1, p1), (n2, p2) in zip(model.teacher.named_parameters(), other.teacher.named_parameters()):
        assert torch.equal(p1, p2), n1


# ------------------------------------------------------------------------------ negatives/clusters
def test_negatives_never_self_and_stay_in_utterance():
    g = torch.Generator().manual_seed(0)
    idx = sample_negative_indices(4, 7, 100, generator=g)
    assert idx.shape == (4, 7, 100)
    assert idx.min() >= 0 and idx.max() <= 6  # indices into this utterance's masked frames only
    own = torch.arange(7).view(1, 7, 1)
    assert not (idx == own).any()
    # every other frame is drawn (uniform over the M - 1 others)
    for m in range(7):
        assert set(idx[:, m].unique().tolist()) == set(range(7)) - {m}


def test_cluster_scaling_and_duplicate_masking_always_apply():
    torch.manual_seed(0)
    batch, frames, dim = 2, 6, 8
    anchors = torch.randn(batch, frames, dim)
    codes = torch.randn(batch, frames, dim)
    code_ids = torch.arange(batch * frames).view(batch, frames)  # no duplicates among positives...
    code_ids[0, 3] = code_ids[0, 1]  # ...except that frame 3 carries frame 1's code
    codes[0, 3] = codes[0, 1]
    clusters = torch.tensor([[0, 0, 1, 1, 0, 1], [1, 1, 1, 0, 0, 0]])
    neg_idx = sample_negative_indices(batch, frames, 10, generator=torch.Generator().manual_seed(3))
    plain = contrastive_logits(anchors, codes, neg_idx, torch.arange(batch * frames).view(batch, frames),
                               None, logit_temp=0.1)
    logits = contrastive_logits(anchors, codes, neg_idx, code_ids, clusters, logit_temp=0.1, scale_factor=0.3)
    cos = torch.nn.functional.cosine_similarity(anchors[0, 0], codes[0, 0], dim=0)
    assert logits[0, 0, 0].item() == pytest.approx(cos.item() / 0.1, rel=1e-5)
    same = clusters.gather(1, neg_idx.flatten(1)).view_as(neg_idx) == clusters.unsqueeze(-1)
    dup = code_ids.gather(1, neg_idx.flatten(1)).view_as(neg_idx) == code_ids.unsqueeze(-1)
    assert dup.any() and same.any() and (~same).any()
    neg, ref = logits[..., 1:], plain[..., 1:]
    assert torch.isinf(neg[dup]).all() and (neg[dup] < 0).all()
    torch.testing.assert_close(neg[same & ~dup], ref[same & ~dup] * 0.3)
    torch.testing.assert_close(neg[~same & ~dup], ref[~same & ~dup])
    weighted = contrastive_logits(anchors, codes, neg_idx, code_ids, clusters, 0.1, 0.3, "log_weight")[..., 1:]
    torch.testing.assert_close(weighted[same & ~dup], ref[same & ~dup] + math.log(0.3))


def test_kmeans_has_no_graph_and_clusters_well():
    g = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(5, 32, generator=g), dim=-1)
    truth = torch.arange(600) % 5
    x = centers[truth] + 0.05 * torch.randn(600, 32, generator=g)
    x.requires_grad_(True)
    y = x * 2  # a tensor with an autograd graph
    labels = cluster_labels(y, 5, "batched", seed=1)
    assert not labels.requires_grad and labels.grad_fn is None
    # the clustering recovers the planted partition
    pairs_same = (labels[:, None] == labels[None, :]) == (truth[:, None] == truth[None, :])
    assert pairs_same.float().mean() > 0.99
    fpk = fast_pytorch_kmeans_labels(y, 5, seed=1)
    assert fpk.grad_fn is None
    # seeded: same seed, same labels
    assert torch.equal(labels, cluster_labels(y, 5, "batched", seed=1))
    assert num_clusters_for(999, 16) == 62 and num_clusters_for(20, 16) == 2


def test_fast_pytorch_kmeans_seed_decides_the_labels_and_leaves_the_global_streams_alone():
    """fast-pytorch-kmeans 0.2.x draws its initial centroids with torch.randint from the global generator:
    seeded through a fork of the random state, the seed decides the labels and nothing else moves."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(400, 16, generator=g), dim=-1)  # no clear clusters
    torch.manual_seed(123)
    np.random.seed(7)
    first = fast_pytorch_kmeans_labels(x, 12, seed=1)
    after_torch, after_numpy = torch.rand(4), np.random.rand(2)
    torch.manual_seed(999)  # another global state: same seed, same labels
    assert torch.equal(fast_pytorch_kmeans_labels(x, 12, seed=1), first)
    # the global streams continue as if k-means had not run
    torch.manual_seed(123)
    np.random.seed(7)
    assert torch.equal(torch.rand(4), after_torch) and np.array_equal(np.random.rand(2), after_numpy)
    # different seeds start from different centroids, so on data without clear clusters the labels differ
    others = [fast_pytorch_kmeans_labels(x, 12, seed=s) for s in (2, 3, 4)]
    assert any(not torch.equal(o, first) for o in others)


def test_batched_kmeans_inertia_matches_fast_pytorch_kmeans():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(2000, 64) + 2 * torch.randn(20, 64).repeat(100, 1), dim=-1)

    def inertia(labels):
        total = 0.0
        for k in labels.unique():
            members = x[labels == k]
            centroid = torch.nn.functional.normalize(members.mean(0), dim=0)
            total += (1 - members @ centroid).sum().item()
        return total

    ours = sum(inertia(cosine_kmeans(x, 20, generator=torch.Generator().manual_seed(s))) for s in range(3))
    ref = sum(inertia(fast_pytorch_kmeans_labels(x, 20, seed=s)) for s in range(3))
    assert ours <= ref * 1.05, (ours, ref)


# ---------------------------------------------------------------------------------------- losses
def test_regression_loss_hand_computed():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 2.0, 0.0]])
    # squared errors: (0 + 1 + 4 + 9) + (1 + 1 + 4 + 0) = 20, scaled by 1/sqrt(4)
    assert regression_loss(pred, target).item() == pytest.approx(10.0)
    # smooth L1, beta 1: row 1: 0 + 0.5 + 1.5 + 2.5; row 2: 0.5 + 0.5 + 1.5 + 0 -> 7.0, scaled by 1/2
    assert regression_loss(pred, target, loss_beta=1.0).item() == pytest.approx(3.5)
    assert regression_loss(pred, target, loss_scale=1.0).item() == pytest.approx(20.0)


def test_contrastive_loss_is_cross_entropy_on_positive():
    logits = torch.tensor([[[2.0, 0.0, float("-inf")]]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert contrastive_loss(logits).item() == pytest.approx(expected)


def test_targets_use_valid_frames_only():
    torch.manual_seed(0)
    x = torch.randn(1, 30, 4)
    padded = torch.cat([x, 100 * torch.ones(1, 10, 4)], dim=1)
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[:, 30:] = True
    torch.testing.assert_close(masked_instance_norm(padded, mask)[:, :30],
                               torch.nn.functional.instance_norm(x.transpose(1, 2)).transpose(1, 2))
    y = build_targets([x, x * 2, x + 1], top_k=2)
    expected = (masked_instance_norm(x * 2) + masked_instance_norm(x + 1)) / 2
    torch.testing.assert_close(y, expected)


# --------------------------------------------------------------------------------------- the model
def test_forward_returns_all_named_scalars_and_finite_loss():
    torch.manual_seed(0)
    model = data2vec_aqc_tiny()
    clean = _speech_like(2, 16000)
    aug = clean + 0.2 * torch.randn_like(clean)
    loss, stats = model(clean, aug, torch.tensor([16000, 11000]))
    expected = {"regression", "contrastive_student", "contrastive_teacher", "diversity", "feature_penalty",
                "code_perplexity", "prob_perplexity", "gumbel_temperature", "ema_decay", "target_std",
                "prediction_std", "masked_frames", "loss"}
    assert expected <= set(stats)
    assert torch.isfinite(loss)
    c = model.config
    total = (c.regression_weight * stats["regression"] + 0.5 * stats["contrastive_student"]
             + 0.5 * stats["contrastive_teacher"] + 0.1 * stats["diversity"] + 10 * stats["feature_penalty"])
    assert loss.item() == pytest.approx(total.item(), rel=1e-5)
    # contrastive terms of an untrained model sit near log(1 + num_negatives)
    assert 1.0 < stats["contrastive_student"].item() < 2 * math.log(1 + c.num_negatives)


def test_teacher_input_is_taken_before_dropout_input():
    """fairseq clones pre_encoder_features ahead of dropout_input: in train mode the teacher's input does
    not depend on encoder_dropout_input, while the student's does."""
    clean = _speech_like(2, 16000)
    aug = clean + 0.2 * torch.randn_like(clean)
    seen = {}
    for p in (0.0, 0.5):
        torch.manual_seed(0)
        model = data2vec_aqc_tiny(encoder_dropout_input=p).train()
        hooks = [model.teacher.register_forward_pre_hook(lambda m, a, p=p: seen.__setitem__(("teacher", p), a[0])),
                 model.encoder.register_forward_pre_hook(lambda m, a, p=p: seen.__setitem__(("student", p), a[0]))]
        model(clean, aug)
        for h in hooks:
            h.remove()
        if p == 0.0:
            feats = model.feature_extractor(clean)
            expected = model.feature_projection.project(feats.transpose(1, 2))[1]
    assert torch.equal(seen[("teacher", 0.5)], seen[("teacher", 0.0)])
    torch.testing.assert_close(seen[("teacher", 0.0)], expected)
    zeros = (seen[("student", 0.5)] == 0) & (seen[("student", 0.0)] != 0)
    assert zeros.float().mean() > 0.1  # dropout_input acted on the student's (unmasked) frames


def test_gradients_reach_codebook_and_cnn_through_contrastive_terms():
    torch.manual_seed(0)
    model = data2vec_aqc_tiny(regression_weight=0.0, diversity_weight=0.0, feature_penalty_weight=0.0,
                              contrastive_teacher_weight=0.0)
    clean = _speech_like(2, 12000)
    loss, _ = model(clean, clean + 0.1 * torch.randn_like(clean))
    loss.backward()
    assert model.quantizer.codevectors.grad.abs().sum() > 0
    assert model.feature_extractor.conv_layers[0].conv.weight.grad.abs().sum() > 0
    assert model.contr_proj.weight.grad.abs().sum() > 0
    grad = model.final_proj.weight.grad  # regression weight 0: nothing flows into final_proj
    assert grad is None or not grad.any()
    # the teacher branch alone still trains contr_proj and the codebook (through the augmented codes)
    model.zero_grad(set_to_none=True)
    model.config.contrastive_student_weight, model.config.contrastive_teacher_weight = 0.0, 0.5
    loss, _ = model(clean, clean + 0.1 * torch.randn_like(clean))
    loss.backward()
    assert model.quantizer.codevectors.grad.abs().sum() > 0
    assert model.contr_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_padded_and_unpadded_give_same_features_and_targets():
    torch.manual_seed(0)
    model = data2vec_aqc_tiny().eval()
    wav = _speech_like(1, 9000, seed=3)
    padded = torch.cat([wav, torch.zeros(1, 7000)], dim=1)
    batch = torch.cat([padded, _speech_like(1, 16000, seed=4)])
    lengths = torch.tensor([9000, 16000])
    alone, n_alone = model.extract_features(wav)
    together, n_together = model.extract_features(batch, lengths)
    n = int(n_alone[0])
    assert int(n_together[0]) == n
    for a, b in zip(alone, together):
        torch.testing.assert_close(a[0, :n], b[0, :n], atol=1e-5, rtol=1e-5)
    # teacher targets: same check through the teacher and the target builder
    with torch.no_grad():
        def targets(w, l):
            feats, _, pad = model._cnn(w, l)
            _, x = model.feature_projection(feats.transpose(1, 2))
            out = model.teacher(x, pad)
            return build_targets(out.ffn_outputs, model.config.top_k_layers, pad)
        torch.testing.assert_close(targets(wav, None)[0, :n], targets(batch, lengths)[0, :n], atol=1e-4, rtol=1e-4)


def test_base_parameter_counts():
    model = data2vec_aqc_base()
    inference = sum(p.numel() for n, p in model.named_parameters()
                    if n.split(".")[0] in ("feature_extractor", "feature_projection", "encoder", "mask_emb"))
    assert inference == 93_164_288  # transformers.Data2VecAudioModel, default (base) config
    student = sum(p.numel() for p in model.student_parameters())
    assert abs(student - 93.84e6) / 93.84e6 < 0.01


def test_bf16_autocast_forward_backward_on_cpu():
    torch.manual_seed(0)
    model = data2vec_aqc_tiny()
    clean = _speech_like(2, 8000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = model(clean, clean + 0.1 * torch.randn_like(clean), torch.tensor([8000, 6000]))
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.student_parameters() if p.grad is not None)


def test_ablation_configs_build_and_run():
    clean = _speech_like(2, 8000)
    data2vec = data2vec_aqc_tiny(use_quantizer=False, use_clustering=False, feature_penalty_weight=0.0)
    loss, stats = data2vec(clean, clean)
    assert stats["contrastive_student"].item() == 0.0 and data2vec.quantizer is None
    no_cluster = data2vec_aqc_tiny(use_clustering=False)
    loss, stats = no_cluster(clean, clean + 0.1)
    assert stats["contrastive_student"].item() > 0
    with pytest.raises(ValueError, match="use_clustering needs use_quantizer"):
        Data2VecAQCConfig(use_quantizer=False)


def test_collapse_guard_stops_with_advice():
    model = data2vec_aqc_tiny(collapse_check_after=3, min_target_std=10.0)
    clean = _speech_like(2, 8000)
    model.set_num_updates(3)  # the reference checks once num_updates > 5000: not yet at 3 of 3
    model(clean, clean)
    model.set_num_updates(4)
    with pytest.raises(RuntimeError, match="at update 4.*learning rate"):
        model(clean, clean)
    model.eval()  # guards only watch training
    model(clean, clean)


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="mask_probb"):
        Data2VecAQCConfig.from_dict({"mask_probb": 0.5})


def test_too_short_input_is_rejected_clearly():
    model = data2vec_aqc_tiny()
    with pytest.raises(ValueError, match="shorter than 2 CNN frames"):
        model(torch.randn(1, 500), torch.randn(1, 500))
