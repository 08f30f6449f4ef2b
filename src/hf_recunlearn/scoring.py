"""P(like) for a Yes/No recommendation prompt, for causal and seq2seq models, batched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from .models import is_seq2seq


@dataclass(frozen=True)
class AnswerTokens:
    """
    Where the Yes/No decision is read.

    The completions are tokenized on their own (as in training). `prefix` holds the tokens both completions share
    (for example a lone "▁" of a sentencepiece tokenizer); the decision is the next token, `yes_id` or `no_id`.
    """

    prefix: tuple[int, ...]
    yes_id: int
    no_id: int

    @classmethod
    def from_completions(cls, tokenizer: PreTrainedTokenizerBase, yes: str, no: str) -> "AnswerTokens":
        yes_ids = tokenizer(yes, add_special_tokens=False)["input_ids"]
        no_ids = tokenizer(no, add_special_tokens=False)["input_ids"]
        for k, (a, b) in enumerate(zip(yes_ids, no_ids)):
            if a != b:
                return cls(tuple(yes_ids[:k]), a, b)
        raise ValueError(
            f"The completions {yes!r} and {no!r} tokenize to the same leading tokens {yes_ids}; the tokenizer cannot "
            "tell the answers apart. Use a template whose answers differ in their first tokens."
        )

    @classmethod
    def from_dataset(cls, tokenizer: PreTrainedTokenizerBase, dataset) -> "AnswerTokens":
        """Read the Yes and No completions off a dataset with `completion` and `label` columns."""
        completions, labels = dataset["completion"], dataset["label"]
        yes = next((c for c, y in zip(completions, labels) if y == 1), None)
        no = next((c for c, y in zip(completions, labels) if y == 0), None)
        if yes is None or no is None:
            from .data.prompts import TEMPLATES

            tpl = next((t for t in TEMPLATES.values() if (yes or no) in (t.yes, t.no)), TEMPLATES["e2urec"])
            yes, no = yes or tpl.yes, no or tpl.no
        return cls.from_completions(tokenizer, yes, no)


class RecCollator:
    """
    Tokenize `prompt` (+ `completion`) rows into model inputs, and mark where the answer is read.

    Causal models: `prompt + completion + eos`, left-padded, with explicit `position_ids` so that padding never
    shifts positions; `labels` cover the completion only. Seq2seq models: the prompt is the encoder input and the
    completion the decoder target. With `for_scoring=True` completions are left out and the answer position is the
    last one, so a causal model only needs the logits of one position.

    Besides model inputs, each batch carries `answer_index` (`(batch,)`, the position whose logits decide) and
    `answer_label` (`(batch,)`, 1 for like) and, when rows have them, `row_index` for looking up precomputed values.
    """

    model_keys = ("input_ids", "attention_mask", "position_ids", "labels", "decoder_input_ids")

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        answer_tokens: AnswerTokens,
        seq2seq: bool = False,
        max_prompt_length: int = 512,
        for_scoring: bool = False,
        decoder_start_token_id: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.answer_tokens = answer_tokens
        self.seq2seq = seq2seq
        self.max_prompt_length = max_prompt_length
        self.for_scoring = for_scoring
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.decoder_start_token_id = self.pad_id if decoder_start_token_id is None else decoder_start_token_id

    def _prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        limit = self.max_prompt_length
        # Keep the end of an over-long prompt: it holds the target item and the question.
        return [x if len(x) <= limit else x[:1] + x[len(x) - limit + 1 :] for x in ids]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [r["prompt"] for r in rows]
        labels01 = torch.tensor([int(r.get("label", 0)) for r in rows])
        prompt_ids = self._prompt_ids(prompts)
        prefix = list(self.answer_tokens.prefix)
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        if self.for_scoring:
            completions = [prefix for _ in rows]
        else:
            completions = self.tokenizer([r["completion"] for r in rows], add_special_tokens=False)["input_ids"]
            completions = [c + eos for c in completions]
        batch = self._collate_seq2seq(prompt_ids, completions) if self.seq2seq else self._collate_causal(prompt_ids, completions)
        batch["answer_label"] = labels01
        if "row_index" in rows[0]:
            batch["row_index"] = torch.tensor([int(r["row_index"]) for r in rows])
        return batch

    def _collate_causal(self, prompt_ids, completions):
        seqs = [p + c for p, c in zip(prompt_ids, completions)]
        width = max(len(s) for s in seqs)
        n = len(seqs)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        answer_index = torch.empty(n, dtype=torch.long)
        prefix_len = len(self.answer_tokens.prefix)
        for i, (p, c) in enumerate(zip(prompt_ids, completions)):
            pad = width - len(p) - len(c)
            input_ids[i, pad:] = torch.tensor(p + c)
            attention[i, pad:] = 1
            if not self.for_scoring:
                labels[i, pad + len(p) :] = torch.tensor(c)
            # Logits at position j predict token j + 1: the answer is read just before the decisive token.
            answer_index[i] = pad + len(p) + prefix_len - 1 if not self.for_scoring else width - 1
        position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
        batch = {"input_ids": input_ids, "attention_mask": attention, "position_ids": position_ids}
        if not self.for_scoring:
            batch["labels"] = labels
        batch["answer_index"] = answer_index
        return batch

    def _collate_seq2seq(self, prompt_ids, completions):
        n = len(prompt_ids)
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            input_ids[i, : len(p)] = torch.tensor(p)
            attention[i, : len(p)] = 1
        dec_width = max(len(c) for c in completions) if completions else 0
        prefix_len = len(self.answer_tokens.prefix)
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if self.for_scoring:
            start = self.decoder_start_token_id
            batch["decoder_input_ids"] = torch.tensor([[start] + list(self.answer_tokens.prefix)] * n, dtype=torch.long)
            batch["answer_index"] = torch.full((n,), prefix_len, dtype=torch.long)
            return batch
        labels = torch.full((n, dec_width), -100, dtype=torch.long)
        for i, c in enumerate(completions):
            labels[i, : len(c)] = torch.tensor(c)
        batch["labels"] = labels
        batch["answer_index"] = torch.full((n,), prefix_len, dtype=torch.long)
        return batch


def make_collator(model, tokenizer, answer_tokens: AnswerTokens, **kwargs) -> RecCollator:
    """A `RecCollator` matched to `model`'s architecture."""
    return RecCollator(
        tokenizer,
        answer_tokens,
        seq2seq=is_seq2seq(model),
        decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None),
        **kwargs,
    )


def model_inputs(batch: dict[str, torch.Tensor], model=None) -> dict[str, torch.Tensor]:
    """The entries of a `RecCollator` batch that the model's `forward` takes, on the model's device."""
    device = _device_of(model) if model is not None else None
    out = {k: v for k, v in batch.items() if k in RecCollator.model_keys}
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def answer_logits(model, batch: dict[str, torch.Tensor], **forward_kwargs) -> torch.Tensor:
    """
    Full-vocabulary logits at each row's answer position, `(batch, vocab)`.

    Works for causal and seq2seq models (PEFT-wrapped or not); gradients flow unless the caller disables them.
    """
    inputs = model_inputs(batch, model)
    if "labels" in inputs and "decoder_input_ids" not in inputs and not is_seq2seq(model):
        inputs.pop("labels")  # the loss is not needed here; the logits are
    if not is_seq2seq(model) and "labels" not in batch:
        inputs["logits_to_keep"] = 1
    logits = model(**inputs, **forward_kwargs).logits
    index = batch["answer_index"].to(logits.device)
    if logits.shape[1] == 1:
        return logits[:, 0]
    return logits[torch.arange(logits.shape[0], device=logits.device), index]


def yes_no_logits(logits: torch.Tensor, answer_tokens: AnswerTokens) -> torch.Tensor:
    """`(batch, vocab)` → `(batch, 2)` logits ordered `[No, Yes]`."""
    return logits[:, [answer_tokens.no_id, answer_tokens.yes_id]]


def p_like(logits: torch.Tensor, answer_tokens: AnswerTokens | None = None) -> torch.Tensor:
    """
    P(like) = softmax([logit_No, logit_Yes])[1], in float32: the one place the recommender's probability is read.

    Args:
        logits (`torch.Tensor`): `(batch, vocab)` answer-position logits (pass `answer_tokens`), or `(batch, 2)`
            logits already ordered `[No, Yes]` (as [`yes_no_logits`] returns them).
        answer_tokens (`AnswerTokens`, *optional*): where Yes and No sit in the vocabulary.

    Returns:
        `torch.Tensor` of shape `(batch,)`, on `logits`' device.
    """
    if answer_tokens is not None:
        logits = yes_no_logits(logits, answer_tokens)
    return torch.softmax(logits.float(), dim=-1)[:, 1]


@torch.no_grad()
def map_batches(
    model,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    data,
    fn: Callable[[int, dict[str, torch.Tensor]], Any],
    batch_size: int = 64,
    progress: bool = False,
) -> list:
    """
    The batched inference loop: `fn(start, batch)` for every collated batch of `data`, in order, with `model` in eval
    mode (restored afterwards) and gradients off.

    Args:
        model: the model `fn` runs; only its train/eval mode is handled here.
        collator: turns a list of row dicts into a batch (a `RecCollator`).
        data: a `datasets.Dataset`, or a list of prompt strings (rows `{"prompt": ...}`).
        fn: called with the index of the batch's first row and the batch; its results are returned as a list.
        batch_size (`int`, *optional*, defaults to `64`): rows per batch.
        progress (`bool`, *optional*, defaults to `False`): a tqdm bar over batches (stderr).
    """
    rows = [{"prompt": p} for p in data] if isinstance(data, (list, tuple)) else data
    steps = range(0, len(rows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="scoring", unit="batch")
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in steps:
            chunk = rows[start : start + batch_size]
            if isinstance(chunk, dict):  # a `Dataset` slice is a dict of columns
                chunk = [dict(zip(chunk, values)) for values in zip(*chunk.values())]
            out.append(fn(start, collator(chunk)))
    finally:
        model.train(was_training)
    return out


def score(
    model,
    tokenizer: PreTrainedTokenizerBase,
    data,
    answer_tokens: AnswerTokens | None = None,
    batch_size: int = 64,
    max_prompt_length: int = 512,
    progress: bool = False,
    return_logits: bool = False,
):
    """
    P(like) = softmax([logit_No, logit_Yes])[1] at the first answer position, for every row of `data`.

    Args:
        model: a causal LM or seq2seq model, PEFT-wrapped or not. It is put in eval mode for the call.
        tokenizer: its tokenizer.
        data: a `datasets.Dataset` with `prompt` (and `completion`/`label`), or a list of prompt strings.
        answer_tokens (`AnswerTokens`, *optional*): read from `data`'s completions when not given.
        batch_size (`int`, *optional*, defaults to `64`): prompts per forward pass.
        return_logits (`bool`, *optional*, defaults to `False`): also return the full-vocabulary answer logits.

    Returns:
        `np.ndarray` of shape `(len(data),)`, float64; with `return_logits`, also a `(len(data), vocab)` float32 array.
    """
    if answer_tokens is None:
        if isinstance(data, (list, tuple)):
            raise ValueError("Pass `answer_tokens` when scoring a list of prompt strings.")
        answer_tokens = AnswerTokens.from_dataset(tokenizer, data)
    collator = make_collator(model, tokenizer, answer_tokens, max_prompt_length=max_prompt_length, for_scoring=True)

    def step(_, batch):
        logits = answer_logits(model, batch)
        return p_like(logits, answer_tokens).cpu(), (logits.float().cpu() if return_logits else None)

    out = map_batches(model, collator, data, step, batch_size, progress)
    probs = torch.cat([p for p, _ in out]).double().numpy() if out else np.zeros(0)
    if not return_logits:
        return probs
    return probs, (torch.cat([v for _, v in out]).numpy() if out else np.zeros((0, 0), np.float32))


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
