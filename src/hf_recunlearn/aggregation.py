"""Aggregating shard LoRA adapters per test sample (APA §3.3), served as one forward pass for a whole batch.

Weights (eqs. 7–8). For a test sample, take its `num_neighbors` most similar validation samples (cosine on a prompt
representation), average each shard's prediction error on them, and set `ω = softmax(-τ · error)`. Alternatives
from the paper's ablation (§4.4.2): `"uniform"` (τ = 0), `"semantic"` (softmax of τ · cosine to each shard's centre)
and `"major"` (all weight on the adaptive argmax).

Levels. **ND** (eq. 6): `ΔW = Σ_k ω_k B_k A_k`. **D** (eq. 5): `ΔW = (Σ_k ω_k B_k)(Σ_k ω_k A_k)`. Because ω differs
per sample, no single merged adapter serves a batch; [`ShardMixture`] instead evaluates all K low-rank paths inside
each LoRA-targeted linear layer of the *base* model (forward hooks; the base model is not modified), with per-row
weights:

    ND:  y = W0 x + Σ_k ω_k(b) s_k B_k (A_k x)
    D:   y = W0 x + (Σ_k ω_k(b) s_k B_k) (Σ_k ω_k(b) A_k x)

Both are two matmuls with an inner size K·r per layer, small next to `W0 x`. `s_k` is shard k's LoRA scaling
(`lora_alpha / r`); the paper's D has one scaling for all shards, which is what APA trains.

[`merge_adapters`] / [`save_merged_adapter`] write a static PEFT adapter for one fixed weight vector (ND as PEFT's
`add_weighted_adapter(..., combination_type="cat")` does it, rank K·r; D at rank r) for users who need one adapter.
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Sequence

import torch
import torch.nn.functional as F


AGGREGATION_LEVELS = ("ND", "D", "output")
WEIGHTINGS = ("adaptive", "uniform", "semantic", "major")
PEFT_PREFIX = "base_model.model."


# --------------------------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------------------------


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1, eps=1e-12)


def nearest_neighbors(
    query: torch.Tensor, keys: torch.Tensor, num_neighbors: int, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """
    Indices of the `num_neighbors` keys with the highest cosine similarity to each query, `(batch, n)`.

    Args:
        query: `(batch, hidden)`; keys: `(num_keys, hidden)`.
        exclude (*optional*): `(batch,)` key index to leave out per query (leave-one-out on the validation set).
    """
    sims = _normalize(query) @ _normalize(keys).T
    if exclude is not None:
        sims[torch.arange(len(query), device=sims.device), exclude.to(sims.device)] = float("-inf")
    n = min(int(num_neighbors), keys.shape[0] - (1 if exclude is not None else 0))
    if n < 1:
        raise ValueError(f"`num_neighbors` must be >= 1 and the validation set non-empty, got {num_neighbors}.")
    return sims.topk(n, dim=-1).indices


def adaptive_weights(
    query_reps: torch.Tensor,
    valid_reps: torch.Tensor,
    valid_errors: torch.Tensor,
    num_neighbors: int = 20,
    temperature: float = 1000.0,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    APA's sample-adaptive weights, eqs. 7–8: `ω_k = softmax_k(-τ · mean_{i ∈ N(x)} error_k(i))`.

    Args:
        query_reps: `(batch, hidden)` representations of the test prompts.
        valid_reps: `(num_valid, hidden)` representations of the validation prompts (same representation).
        valid_errors: `(K, num_valid)` prediction error of each shard on each validation sample (`|y - P(like)|`).
        num_neighbors: n = |N_v| (paper: 20 for movies, 100 for books).
        temperature: τ (paper: 1000). 0 gives uniform weights.

    Returns:
        `(batch, K)` float32 weights; every row sums to 1.
    """
    idx = nearest_neighbors(query_reps, valid_reps, num_neighbors, exclude)  # (B, n)
    errors = valid_errors.to(idx.device).float()[:, idx].mean(-1).T  # (B, K)
    return torch.softmax(-float(temperature) * errors, dim=-1)


def uniform_weights(batch_size: int, num_shards: int, device=None) -> torch.Tensor:
    """`(batch, K)` weights `1/K`: the paper's "average" ablation, and SISA's output averaging."""
    return torch.full((batch_size, num_shards), 1.0 / num_shards, device=device)


def semantic_weights(query_reps: torch.Tensor, centroids: torch.Tensor, temperature: float = 1000.0) -> torch.Tensor:
    """The paper's "semantic" ablation: `softmax_k(τ · cos(x, c_k))` with `c_k` the centre of shard k's prompts."""
    sims = _normalize(query_reps) @ _normalize(centroids.to(query_reps.device)).T
    return torch.softmax(float(temperature) * sims, dim=-1)


def major_weights(weights: torch.Tensor) -> torch.Tensor:
    """The paper's "major" ablation: all weight on each row's largest weight (first one on ties)."""
    return F.one_hot(weights.argmax(-1), weights.shape[-1]).to(weights.dtype)


# --------------------------------------------------------------------------------------------------------------------
# Shard adapters as stacked tensors
# --------------------------------------------------------------------------------------------------------------------


def lora_scaling(config) -> float:
    """`lora_alpha / r` (or `/ sqrt(r)` with rsLoRA), the factor PEFT applies to `B A x`."""
    if getattr(config, "use_rslora", False):
        return config.lora_alpha / (config.r**0.5)
    return config.lora_alpha / config.r


def _check_plain_lora(config) -> None:
    unsupported = [
        name
        for name in ("fan_in_fan_out", "use_dora", "lora_bias")
        if getattr(config, name, False)
    ]
    if unsupported or getattr(config, "rank_pattern", None) or getattr(config, "alpha_pattern", None):
        raise ValueError(
            "Shard aggregation supports plain LoRA on linear layers; the adapter config sets "
            f"{unsupported or 'rank/alpha patterns'}. "
            "Train the shards with a plain `LoraConfig` (r, lora_alpha, lora_dropout, target_modules)."
        )


def adapter_modules(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Module paths (relative to the base model) that a PEFT LoRA state dict adapts, sorted."""
    paths = set()
    for key in state_dict:
        if key.endswith(".lora_A.weight"):
            path = key[: -len(".lora_A.weight")]
            paths.add(path[len(PEFT_PREFIX) :] if path.startswith(PEFT_PREFIX) else path)
    if not paths:
        raise ValueError("The adapter state dict has no `lora_A` weights; is it a LoRA adapter saved by PEFT?")
    return sorted(paths)


def _lora_pair(state_dict, path):
    return state_dict[f"{PEFT_PREFIX}{path}.lora_A.weight"], state_dict[f"{PEFT_PREFIX}{path}.lora_B.weight"]


class _Stack:
    """All K shards' LoRA factors of one linear layer: `A` `(K·r, in)`, `B` `(out, K·r)` with `s_k` folded in."""

    def __init__(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], scalings: Sequence[float]):
        ranks = {a.shape[0] for a, _ in pairs}
        if len(ranks) != 1:
            raise ValueError(f"All shard adapters must have the same rank, got ranks {sorted(ranks)}.")
        self.num_shards = len(pairs)
        self.rank = ranks.pop()
        self.A_list = [a.detach() for a, _ in pairs]
        self.B_list = [b.detach() for _, b in pairs]
        self.scalings = [float(s) for s in scalings]
        dtype = self.A_list[0].dtype
        self.compute_dtype = dtype if dtype not in (torch.float16, torch.bfloat16) else torch.float32
        self.A = torch.cat(self.A_list, dim=0)
        self.B = torch.cat([b * s for b, s in zip(self.B_list, self.scalings)], dim=1)
        self._cache: dict = {}

    def on(self, device, dtype):
        key = (device, dtype)
        if key not in self._cache:
            self._cache = {
                key: (
                    self.A.to(device=device, dtype=dtype),
                    self.B.to(device=device, dtype=dtype),
                    [a.to(device=device, dtype=dtype) for a in self.A_list],
                    [b.to(device=device, dtype=dtype) for b in self.B_list],
                )
            }
        return self._cache[key]


class ShardMixture:
    """
    K shard LoRA adapters evaluated together inside one forward pass of the base model.

    Forward hooks on the LoRA-targeted linear layers add the shard paths to the base output; nothing in the model is
    replaced, and the hooks exist only inside [`active`], so the base model stays exactly the base model outside it
    (shard training can wrap it with PEFT in between).

    Args:
        model: the base model (not PEFT-wrapped).
        shard_state_dicts: one PEFT LoRA state dict per shard (keys as in `adapter_model.safetensors`).
        lora_configs: the shards' `LoraConfig`s (one, or one per shard).
    """

    def __init__(self, model: torch.nn.Module, shard_state_dicts: Sequence[dict], lora_configs):
        if not shard_state_dicts:
            raise ValueError("`shard_state_dicts` is empty; pass at least one shard adapter.")
        if not isinstance(lora_configs, (list, tuple)):
            lora_configs = [lora_configs] * len(shard_state_dicts)
        for config in lora_configs:
            _check_plain_lora(config)
        self.model = model
        self.num_shards = len(shard_state_dicts)
        self.modules = adapter_modules(shard_state_dicts[0])
        for k, sd in enumerate(shard_state_dicts[1:], start=1):
            if adapter_modules(sd) != self.modules:
                raise ValueError(f"Shard {k} adapts different modules than shard 0; all shards need the same targets.")
        scalings = [lora_scaling(c) for c in lora_configs]
        self.stacks = {p: _Stack([_lora_pair(sd, p) for sd in shard_state_dicts], scalings) for p in self.modules}
        for path in self.modules:
            layer = model.get_submodule(path)
            if not isinstance(layer, torch.nn.Linear):  # bitsandbytes' Linear4bit / Linear8bitLt are nn.Linear too
                raise TypeError(
                    f"Module {path!r} is a {type(layer).__name__}; shard aggregation needs linear targets "
                    "(`nn.Linear`, or bitsandbytes' `Linear4bit` / `Linear8bitLt` on a quantized base). Train the "
                    "shards with `target_modules` naming linear layers."
                )
        self._weights = None
        self._level = "ND"
        self._shard = None

    @contextlib.contextmanager
    def active(self, weights: torch.Tensor | None = None, level: str = "ND", shard: int | None = None):
        """
        Run the model inside this block with the shard mixture applied.

        Args:
            weights: `(batch, K)` per-row weights (rows of the batch the model is called with).
            level: `"ND"` or `"D"`.
            shard: instead of weights, apply shard `shard` alone, computed exactly as PEFT computes one adapter.
        """
        if level not in ("ND", "D"):
            raise ValueError(f"`level` must be 'ND' or 'D' for a parameter mixture, got {level!r}.")
        if (weights is None) == (shard is None):
            raise ValueError("Pass exactly one of `weights` (per-row mixture) or `shard` (one adapter).")
        if weights is not None and weights.shape[-1] != self.num_shards:
            raise ValueError(f"`weights` has {weights.shape[-1]} columns for {self.num_shards} shards.")
        if shard is not None and not 0 <= shard < self.num_shards:
            raise ValueError(f"`shard` must be in [0, {self.num_shards}), got {shard}.")
        self._weights, self._level, self._shard = weights, level, shard
        handles = [self.model.get_submodule(p).register_forward_hook(self._hook(p)) for p in self.modules]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._weights, self._shard = None, None

    def _hook(self, path: str):
        stack = self.stacks[path]

        def hook(module, args, output):
            x = args[0]
            # The low-rank paths run in the adapters' dtype, as PEFT runs them: a quantized layer's weight is packed
            # integers, and a half-precision base keeps float32 adapters (`autocast_adapter_dtype`).
            A, B, A_list, B_list = stack.on(x.device, stack.compute_dtype)
            xin = x.to(A.dtype)
            add = _adder(module)
            if self._shard is not None:
                k = self._shard
                delta = F.linear(F.linear(xin, A_list[k]), B_list[k]) * stack.scalings[k]
                return add(output, delta)
            w = self._weights.to(device=x.device, dtype=A.dtype)
            if w.shape[0] != x.shape[0]:
                raise ValueError(f"`weights` has {w.shape[0]} rows but the layer input has batch size {x.shape[0]}.")
            w = w.reshape(w.shape[0], *([1] * (x.dim() - 2)), stack.num_shards, 1)  # (B, 1.., K, 1)
            xa = F.linear(xin, A).unflatten(-1, (stack.num_shards, stack.rank))  # (B, T.., K, r)
            if self._level == "ND":
                z = xa * w
            else:
                z = (xa * w).sum(-2, keepdim=True) * w  # (Σ ω A x) fed to every B_k with its ω_k
            return add(output, F.linear(z.flatten(-2), B))

        return hook


def _adder(module: torch.nn.Module):
    """
    How PEFT adds a LoRA path's output to the base layer's, so that a single shard is reproduced exactly: its
    bitsandbytes layers cast the path to the output dtype first, its `nn.Linear` adds in the promoted dtype and casts
    the sum back.
    """
    if type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
        return lambda output, delta: output + delta.to(output.dtype)
    return lambda output, delta: (output + delta).to(output.dtype)


# --------------------------------------------------------------------------------------------------------------------
# Static merged adapters
# --------------------------------------------------------------------------------------------------------------------


def merge_adapters(shard_state_dicts: Sequence[dict], lora_config, weights: Sequence[float], level: str = "ND"):
    """
    One static PEFT LoRA adapter equal to the K shards aggregated with the fixed `weights`.

    - `"ND"`: rank K·r, `A = cat_k(ω_k s_k A_k)`, `B = cat_k(B_k)`, `lora_alpha = r_new` (scaling 1): exactly what
      PEFT's `add_weighted_adapter(..., combination_type="cat")` builds, so `B A = Σ_k ω_k s_k B_k A_k`.
    - `"D"`: rank r, `A = Σ_k ω_k A_k`, `B = Σ_k ω_k B_k`, same scaling as the shards (eq. 5).

    Returns:
        `(state_dict, LoraConfig)`, ready for `set_peft_model_state_dict` or [`save_merged_adapter`].
    """
    if level not in ("ND", "D"):
        raise ValueError(f"`level` must be 'ND' or 'D', got {level!r}.")
    weights = [float(w) for w in weights]
    if len(weights) != len(shard_state_dicts):
        raise ValueError(f"`weights` has {len(weights)} entries for {len(shard_state_dicts)} shards.")
    _check_plain_lora(lora_config)
    s = lora_scaling(lora_config)
    r = lora_config.r
    merged = {}
    for path in adapter_modules(shard_state_dicts[0]):
        pairs = [_lora_pair(sd, path) for sd in shard_state_dicts]
        if level == "ND":
            A = torch.cat([a * w * s for (a, _), w in zip(pairs, weights)], dim=0)
            B = torch.cat([b for _, b in pairs], dim=1)
        else:
            A = sum(w * a for (a, _), w in zip(pairs, weights))
            B = sum(w * b for (_, b), w in zip(pairs, weights))
        merged[f"{PEFT_PREFIX}{path}.lora_A.weight"] = A.contiguous()
        merged[f"{PEFT_PREFIX}{path}.lora_B.weight"] = B.contiguous()
    config = copy.deepcopy(lora_config)
    if level == "ND":
        config.r = r * len(shard_state_dicts)
        config.lora_alpha = config.r
        config.use_rslora = False
    config.lora_dropout = 0.0
    config.inference_mode = True
    return merged, config


def save_merged_adapter(
    save_directory: str | os.PathLike,
    shard_state_dicts: Sequence[dict],
    lora_config,
    weights: Sequence[float],
    level: str = "ND",
) -> None:
    """Write [`merge_adapters`]'s result as a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`)."""
    from safetensors.torch import save_file

    state, config = merge_adapters(shard_state_dicts, lora_config, weights, level)
    os.makedirs(save_directory, exist_ok=True)
    config.save_pretrained(save_directory)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
              os.path.join(save_directory, "adapter_model.safetensors"), metadata={"format": "pt"})  # fmt: skip
