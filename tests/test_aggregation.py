"""Aggregation weights (eqs. 7-8), the one-pass shard mixture (D and ND) and static merged adapters.

Adapters are initialised with `init_lora_weights=False` (non-zero B), otherwise every merge is trivially zero.
"""

import copy

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from hf_recunlearn.aggregation import (
    ShardMixture,
    adaptive_weights,
    major_weights,
    merge_adapters,
    save_merged_adapter,
    semantic_weights,
    uniform_weights,
)

from apa_helpers import single_thread, tiny_base, tiny_datasets, tiny_tokenizer


K = 3
TARGETS = {"causal": ["q_proj", "v_proj"], "seq2seq": ["q", "v"]}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(tiny_datasets(num_users=8, sizes=(8, 4, 4)))


def lora_config(arch, **kw):
    return LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=TARGETS[arch],
        task_type="CAUSAL_LM" if arch == "causal" else "SEQ_2_SEQ_LM",
        init_lora_weights=False,
        **kw,
    )


@pytest.fixture(scope="module", params=["causal", "seq2seq"])
def shards(request, tokenizer):
    """A base model and K random (non-zero) shard adapters on it."""
    arch = request.param
    base = tiny_base(tokenizer, arch)
    base.eval()
    config = lora_config(arch)
    adapters = []
    for k in range(K):
        torch.manual_seed(100 + k)
        peft_model = get_peft_model(base, copy.deepcopy(config))
        adapters.append({n: t.detach().clone() for n, t in get_peft_model_state_dict(peft_model).items()})
        base = peft_model.unload()
    return arch, base, config, adapters


def inputs(arch, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (batch, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # one left-padded row
    if arch == "causal":
        return {"input_ids": ids, "attention_mask": mask}
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": ids[:, :2]}


def with_adapter(base, config, state):
    model = get_peft_model(base, copy.deepcopy(config))
    set_peft_model_state_dict(model, state)
    model.eval()
    return model


@torch.no_grad()
def peft_logits(base, config, state, batch):
    model = with_adapter(base, config, state)
    try:
        return model(**batch).logits
    finally:
        model.unload()


# ---------------------------------------------------------------------------------------------------- weights


def test_adaptive_weights_match_eqs_7_and_8():
    valid_reps = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    valid_errors = torch.tensor([[0.1, 0.3, 0.9, 0.7], [0.6, 0.4, 0.2, 0.0]])  # (K=2, n_valid=4)
    query = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    w = adaptive_weights(query, valid_reps, valid_errors, num_neighbors=2, temperature=10.0)
    # Query 0's neighbours are validation rows 0 and 1: errors (0.2, 0.5); query 1's are rows 2 and 3: (0.8, 0.1).
    expected = torch.softmax(-10.0 * torch.tensor([[0.2, 0.5], [0.8, 0.1]]), dim=-1)
    torch.testing.assert_close(w, expected)
    assert torch.allclose(adaptive_weights(query, valid_reps, valid_errors, 2, 0.0), uniform_weights(2, 2))
    hard = adaptive_weights(query, valid_reps, valid_errors, 2, 1000.0)
    torch.testing.assert_close(hard, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # Leave-one-out: row 0 may not be its own neighbour.
    loo = adaptive_weights(valid_reps[:1], valid_reps, valid_errors, 1, 10.0, exclude=torch.tensor([0]))
    torch.testing.assert_close(loo, torch.softmax(-10.0 * torch.tensor([[0.3, 0.4]]), dim=-1))


def test_semantic_and_major_weights():
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = semantic_weights(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), centroids, temperature=1.0)
    expected = torch.softmax(torch.tensor([[1.0, 0.0], [2**-0.5, 2**-0.5]]), dim=-1)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(major_weights(torch.tensor([[0.2, 0.7, 0.1]])), torch.tensor([[0.0, 1.0, 0.0]]))


# ---------------------------------------------------------------------------------------------------- mixture


@pytest.mark.parametrize("level", ["ND", "D"])
def test_one_hot_weights_reproduce_each_shard(shards, level):
    arch, base, config, adapters = shards
    batch = inputs(arch)
    mixture = ShardMixture(base, adapters, config)
    for k in range(K):
        expected = peft_logits(base, config, adapters[k], batch)
        one_hot = torch.zeros(4, K)
        one_hot[:, k] = 1.0
        with torch.no_grad(), mixture.active(weights=one_hot, level=level):
            got = base(**batch).logits
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        with torch.no_grad(), mixture.active(shard=k):
            exact = base(**batch).logits
        assert torch.equal(exact, expected)  # the single-shard path computes exactly what PEFT computes


@pytest.mark.parametrize("level", ["ND", "D"])
def test_batched_one_pass_equals_per_sample_merged_adapters(shards, level):
    arch, base, config, adapters = shards
    batch = inputs(arch, batch=5, seed=1)
    weights = torch.softmax(torch.randn(5, K, generator=torch.Generator().manual_seed(3)) * 2, dim=-1)
    mixture = ShardMixture(base, adapters, config)
    with torch.no_grad(), mixture.active(weights=weights, level=level):
        batched = base(**batch).logits
    with torch.no_grad():
        plain = base(**batch).logits
    assert (batched - plain).abs().max() > 1e-2  # the adapters do change the output
    for b in range(5):
        state, merged_config = merge_adapters(adapters, config, weights[b].tolist(), level)
        row = {k: v[b : b + 1] for k, v in batch.items()}
        expected = peft_logits(base, merged_config, state, row)
        torch.testing.assert_close(batched[b : b + 1], expected, rtol=1e-4, atol=1e-5)


def test_d_and_nd_differ_for_mixed_weights(shards):
    arch, base, config, adapters = shards
    batch = inputs(arch)
    mixture = ShardMixture(base, adapters, config)
    out = {}
    for level in ("ND", "D"):
        with torch.no_grad(), mixture.active(weights=uniform_weights(4, K), level=level):
            out[level] = base(**batch).logits
    assert (out["ND"] - out["D"]).abs().max() > 1e-4


def test_uniform_nd_export_equals_peft_cat_merge(shards, tmp_path):
    arch, base, config, adapters = shards
    model = with_adapter(base, config, adapters[0])
    try:
        names = [f"shard_{k}" for k in range(K)]
        model.add_adapter(names[0], copy.deepcopy(config))
        for name, state in zip(names, adapters):
            if name != names[0]:
                model.add_adapter(name, copy.deepcopy(config))
            set_peft_model_state_dict(model, state, adapter_name=name)
        model.add_weighted_adapter(names, [1.0 / K] * K, "cat_merge", combination_type="cat")
        peft_state = get_peft_model_state_dict(model, adapter_name="cat_merge")
    finally:
        model.unload()
    ours, ours_config = merge_adapters(adapters, config, [1.0 / K] * K, "ND")
    assert ours_config.r == K * config.r
    assert set(ours) == set(peft_state)
    for key in ours:
        torch.testing.assert_close(ours[key], peft_state[key], rtol=1e-6, atol=1e-7)
    # ...and the one-pass mixture with uniform ND weights computes that adapter.
    batch = inputs(arch)
    save_merged_adapter(tmp_path / "uniform", adapters, config, [1.0 / K] * K, "ND")
    loaded = PeftModel.from_pretrained(base, tmp_path / "uniform")
    loaded.eval()
    try:
        with torch.no_grad():
            expected = loaded(**batch).logits
    finally:
        loaded.unload()
    mixture = ShardMixture(base, adapters, config)
    with torch.no_grad(), mixture.active(weights=uniform_weights(4, K), level="ND"):
        got = base(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_mixture_leaves_the_base_model_untouched(shards):
    arch, base, config, adapters = shards
    before = {k: v.clone() for k, v in base.state_dict().items()}
    batch = inputs(arch)
    with torch.no_grad():
        plain = base(**batch).logits
    mixture = ShardMixture(base, adapters, config)
    with torch.no_grad(), mixture.active(weights=uniform_weights(4, K)):
        base(**batch)
    with torch.no_grad():
        assert torch.equal(base(**batch).logits, plain)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert not any(m._forward_hooks for m in base.modules())


def test_mixture_validates_its_inputs(shards):
    arch, base, config, adapters = shards
    mixture = ShardMixture(base, adapters, config)
    with pytest.raises(ValueError, match="columns"):
        with mixture.active(weights=torch.ones(2, K + 1)):
            pass
    with pytest.raises(ValueError, match="exactly one"):
        with mixture.active():
            pass
    with pytest.raises(ValueError, match="rows"):
        with torch.no_grad(), mixture.active(weights=uniform_weights(2, K)):
            base(**inputs(arch, batch=4))
    with pytest.raises(ValueError, match="plain LoRA"):
        ShardMixture(base, adapters, lora_config(arch, use_dora=True))
    assert np.isclose(merge_adapters(adapters, config, [1, 0, 0], "D")[1].lora_alpha, config.lora_alpha)
