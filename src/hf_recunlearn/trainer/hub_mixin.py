"""What every trainer does with its saved model: the library's model card, and a versioned push to the Hub."""

from __future__ import annotations

import functools
import os
from typing import Any


# `Trainer.push_to_hub(**kwargs)` passes `create_model_card`'s argument names; the cards and the Hub layer use these.
_CARD_ALIASES = {"dataset_name": "datasets", "dataset": "datasets", "finetuned_from": "base_model"}
_CARD_FIELDS = ("datasets", "base_model", "license", "tags", "library_name")
# `create_model_card` arguments of `Trainer` that the library's cards have no field for.
_IGNORED = ("model_name", "language", "tasks", "dataset_tags", "dataset_args")


def card_metadata(kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    The card metadata in `kwargs` (removed from it), under the cards' names: `datasets` (also `dataset_name` /
    `dataset`, as `Trainer.push_to_hub` names it), `base_model` (also `finetuned_from`), `license`, `tags`,
    `library_name`. Strings become one-element lists where a list is expected.
    """
    for alias, name in _CARD_ALIASES.items():
        if alias in kwargs:
            kwargs.setdefault(name, kwargs.pop(alias))
    out = {name: kwargs.pop(name) for name in _CARD_FIELDS if kwargs.get(name) is not None}
    for name in ("datasets", "tags"):
        if isinstance(out.get(name), str):
            out[name] = [out[name]]
    for name in _IGNORED:
        kwargs.pop(name, None)
    return out


class VersionedHubMixin:
    """
    The model card and the Hub push of the library's trainers ([`RecTrainer`] and every unlearning trainer).

    - `save_model()` saves as `Trainer` does, then writes the library's card (`hf_recunlearn.cards.model_card`) as
      `README.md`, in place of the boilerplate PEFT's `save_pretrained` leaves there.
    - `push_to_hub()` keeps `Trainer`'s contract (`commit_message`, `blocking`, `token`, `revision`, `private`,
      card keyword arguments; the repo is `args.hub_model_id`, or the output directory's name) but publishes the saved
      model as the next version `vN` of a versioned repo, through `hf_recunlearn.hub.push_adapter` (an APA model:
      `hub.push`): one commit, one tag, the version log, the receipts, the same card, and after a forget event the
      earlier versions purged unless `keep_history=True`. It returns the version's `CommitInfo` (a
      `hub.HubPushResult`), or a `Future` of it with `blocking=False`.
    - `Trainer`'s own checkpoint uploads (`hub_strategy`) are not versions, so they are not made.

    A subclass describes itself with `_card_inputs()` (what the card shows beyond the metadata) and
    `_push_event()` (the event and the number of users it removed, for the version log).
    """

    _method: str | None = None  # key of `hf_recunlearn.cards.METHODS`; default: `_name` in lower case

    @property
    def card_method(self) -> str:
        if self._method:
            return self._method
        return getattr(self, "_name", "tallrec").lower().replace("-", "")

    def _card_inputs(self) -> dict[str, Any]:
        """What the card says beyond its metadata, from the trainer's state (counts only, never ids)."""
        return {}

    def _push_event(self) -> tuple[str, int]:
        """`(event, users removed)` of the version `push_to_hub` publishes."""
        return "train", 0

    def _saved_model(self):
        """The model `save_model` writes: `self.model` without accelerate's wrappers."""
        return self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model

    def _card_base_model(self) -> str | None:
        model = self._saved_model()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return getattr(getattr(base, "config", None), "_name_or_path", None) or None

    def _is_adapter_model(self) -> bool:
        from peft import PeftModel

        return isinstance(self._saved_model(), PeftModel)

    def _card_tags(self, tags) -> list[str]:
        """`tags` (a string or a list) followed by the trainer's own `_tag_names` not already among them."""
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        return tags + [t for t in getattr(self, "_tag_names", []) if t not in tags]

    def create_model_card(self, model_name: str | None = None, output_dir: str | None = None, **kwargs) -> None:
        """
        Write `README.md` in `output_dir` (default `args.output_dir`) from the shipped template, rendered by
        `hf_recunlearn.cards.model_card`: the method and its citation, the base model, what was forgotten (counts
        only), the audit and the hyperparameters. The metadata (`license`, `datasets` or `dataset_name`,
        `base_model`, `library_name`, `tags`) is set by the keyword arguments, as `Trainer.push_to_hub(**kwargs)`
        passes them.
        """
        if not self.is_world_process_zero():
            return
        from ..cards import model_card

        metadata = card_metadata(dict(kwargs))
        tags = self._card_tags(metadata.pop("tags", None))
        metadata.setdefault("base_model", self._card_base_model())
        metadata.setdefault("library_name", "peft" if self._is_adapter_model() else "transformers")
        directory = output_dir or self.args.output_dir
        name = model_name or os.path.basename(os.path.abspath(directory))
        card = model_card(self.card_method, name=name, tags=tags, **metadata, **self._card_inputs())
        os.makedirs(directory, exist_ok=True)
        card.save(os.path.join(directory, "README.md"))

    def _after_save(self, output_dir: str) -> None:
        """Runs after the model and its card are saved to `output_dir` (the unlearning trainers write a receipt)."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """
        `Trainer.save_model`, then the library's card (`README.md`) in place of PEFT's; with `args.push_to_hub`
        (and not from inside the Trainer), the saved model is then pushed as a new version.
        """
        super().save_model(output_dir, _internal_call=True)  # `Trainer`'s own push would not be versioned
        target = output_dir or self.args.output_dir
        if self.args.should_save:
            self.create_model_card(output_dir=target)
        self._after_save(target)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Checkpoints are not versions: `push_to_hub()` publishes the saved model as one."""

    def _resolve_repo(self, token, private, repo_id: str | None) -> str:
        """The repo to push to: `repo_id`, else `args.hub_model_id` (namespace resolved by `init_hf_repo`)."""
        if repo_id is not None:
            return repo_id
        if getattr(self, "hub_model_id", None) is None:
            self.init_hf_repo(token=token, private=private)
        return self.hub_model_id

    def push_to_hub(
        self,
        commit_message: str | None = None,
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ):
        """
        Save the model (`save_model`) and push it as the next version `vN` of the repo `args.hub_model_id` (created
        if missing; default: the output directory's name under your namespace), through
        `hf_recunlearn.hub.push_adapter`.

        Args:
            commit_message (`str`, *optional*): defaults to a summary of the event (`"v2: unlearn (e2urec)"`).
            blocking (`bool`, defaults to `True`): with `False`, push in the background and return a `Future`.
            token (`str`, *optional*): defaults to `args.hub_token`, then the logged-in token.
            revision (`str`, *optional*): versions are tags on `main`; only `None` or `"main"` is accepted.
            private (`bool`, *optional*): create the repo private (defaults to `args.hub_private_repo`).
            kwargs: card metadata (`license`, `datasets`/`dataset_name`, `base_model`/`finetuned_from`, `tags`,
                `library_name`), and `repo_id`, `keep_history`, `metrics` of `hub.push_adapter`.

        Returns:
            [`~hf_recunlearn.hub.HubPushResult`]: the `huggingface_hub.CommitInfo` of the version (`str(result)` is
            the commit URL), with its `tag` and `version`; `None` on processes other than the main one.
        """
        if revision not in (None, "main"):
            raise ValueError(
                f"`revision` must be None or 'main' for a versioned push, got {revision!r}: each version is a tag "
                "(`v1`, `v2`, ...) on `main`. Leave `hub_revision` unset."
            )
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        private = self.args.hub_private_repo if private is None else private
        repo_id = self._resolve_repo(token, private, kwargs.pop("repo_id", None))
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        push = self._versioned_push(repo_id, commit_message=commit_message, token=token, private=bool(private),
                                    **card_metadata(kwargs), **kwargs)  # fmt: skip
        if blocking:
            return push()
        from huggingface_hub import HfApi

        return HfApi(token=token).run_as_future(push)

    def _versioned_push(self, repo_id: str, **kwargs):
        from ..hub import push_adapter

        event, users = self._push_event()
        tags = self._card_tags(kwargs.pop("tags", None))
        kwargs.setdefault("base_model", self._card_base_model())
        return functools.partial(push_adapter, self.args.output_dir, repo_id, method=self.card_method, event=event,
                                 users_removed=users, tags=tags, **kwargs)  # fmt: skip
