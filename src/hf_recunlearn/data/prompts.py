"""Prompt templates: how a user's history and a target item become a Yes/No question."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HistoryItem:
    title: str
    liked: bool


@dataclass(frozen=True)
class PromptTemplate:
    """
    A Yes/No recommendation question. `render` returns the prompt; the completion is `yes` or `no` appended to it.

    Args:
        name (`str`): `"e2urec"` or `"tallrec"`.
        yes (`str`): completion for a like, appended directly to the prompt.
        no (`str`): completion for a dislike.
    """

    name: str
    yes: str
    no: str

    def render(self, history: list[HistoryItem], target: str, item_kind: str = "movie") -> str:
        if self.name == "e2urec":
            verb = "watched" if item_kind == "movie" else "read"
            marked = ", ".join(f"{h.title} ({'liked' if h.liked else 'disliked'})" for h in history)
            return (
                f"The user {verb} the following {item_kind}s in order: {marked}. "
                f"Please deduce if he will like the {item_kind} {target}."
            )
        liked = ", ".join(f'"{h.title}"' for h in history if h.liked)
        disliked = ", ".join(f'"{h.title}"' for h in history if not h.liked)
        instruction = (
            "Given the user's preference and unpreference, identify whether the user will like the target "
            f'{item_kind} by answering "Yes." or "No.".'
        )
        body = (
            f"User Preference: {liked}\nUser Unpreference: {disliked}\n"
            f'Whether the user will like the target {item_kind} "{target}"?'
        )
        return tallrec_prompt(instruction, body)

    def completion(self, label: int) -> str:
        return self.yes if label else self.no


def tallrec_prompt(instruction: str, body: str) -> str:
    """The Alpaca-style prompt TALLRec fine-tunes on; the answer follows `### Response:\\n`."""
    return f"### Instruction:\n{instruction}\n\n### Input:\n{body}\n\n### Response:\n"


TEMPLATES = {
    # E2URec's reference code answers with a bare "Yes"/"No" after the question.
    "e2urec": PromptTemplate("e2urec", yes=" Yes", no=" No"),
    # TALLRec answers "Yes."/"No." on the response line.
    "tallrec": PromptTemplate("tallrec", yes="Yes.", no="No."),
}


def get_template(name: str | PromptTemplate) -> PromptTemplate:
    if isinstance(name, PromptTemplate):
        return name
    if name not in TEMPLATES:
        raise ValueError(f"`template` must be one of {sorted(TEMPLATES)}, got {name!r}.")
    return TEMPLATES[name]
