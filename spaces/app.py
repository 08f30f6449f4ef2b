"""Gradio Space: recommend for a user, forget them (APA, or E2URec), show the recommendations before and after.

The logic lives in `hf_recunlearn.space`; this file only lays out the page and wires events. `build_app()` returns
the `gr.Blocks`; the server starts only when the file is run (`python app.py`, as Spaces does).
Configuration: environment variables, see README.md.
"""

from __future__ import annotations

import threading

import gradio as gr
import pandas as pd

from hf_recunlearn.space import (
    METHODS,
    DemoRecommender,
    MethodUnavailableError,
    SpaceSettings,
    UnknownUserError,
    comparison_figure,
)


INTRO = """
# Forget me — unlearning for an LLM recommender

A small language model answers *"will this user like this movie?"*. It is trained as **APA**: the users are split
into shards, with one LoRA adapter per shard, aggregated per request. Pick a user, look at what the model recommends,
then ask it to **forget** them: APA retrains only the shard that held the user (exact unlearning), and the page shows
the recommendations before and after. The data is synthetic.
"""

CSS = """
#after-panel { border-top: 2px solid var(--border-color-primary); padding-top: 8px; }
"""


def _empty(columns) -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in columns})


def _summary_markdown(result) -> str:
    exact = result.method.startswith("APA")
    absent = "**absent**" if not result.in_ledger_after else "**still present** (approximate method)"
    shards = ", ".join(str(k) for k in result.affected_shards) or "none"
    lines = [
        f"### Forgot {result.user_id} with {result.method}",
        f"- Time: **{result.seconds:.1f} s**",
        f"- Shards retrained: **{len(result.affected_shards)} of {result.num_shards}** ({shards})",
        f"- Training samples {'removed' if exact else 'unlearned'}: **{result.samples_removed}**",
        f"- Model version: {result.version_before} → {result.version_after}",
        f"- User in the shard ledger now: {absent}",
    ]
    if result.note:
        lines.append(f"\n_{result.note}_")
    return "\n".join(lines)


def build_app(settings: SpaceSettings | None = None) -> gr.Blocks:
    """The Space's page. The recommender is loaded (or built, once) by the first request, with a progress bar."""
    settings = settings or SpaceSettings.from_env()
    holder: dict[str, DemoRecommender] = {}
    holder_lock = threading.Lock()

    def get_demo(progress=None) -> DemoRecommender:
        with holder_lock:
            if "demo" not in holder:
                report = (lambda f, m: progress(f, desc=m)) if progress is not None else None
                holder["demo"] = DemoRecommender.load(settings, progress=report)
            return holder["demo"]

    def init(progress=gr.Progress()):
        demo = get_demo(progress)
        user = demo.default_user()
        info = f"**Model:** {settings.source}, version {demo.recommender.version}, {len(demo.users())} users."
        return gr.update(choices=demo.user_choices(), value=user), info

    def show_user(user):
        demo = get_demo()
        if not user:
            return _empty(["item"]), _empty(["item"]), _empty(["item"]), "### Pick a user", gr.update()
        try:
            tables = demo.history(user), demo.recommend(user), demo.own_items(user)
            # The status line keeps the last action's message (e.g. the forget that moved the page to this user).
            return *tables, f"### Showing {demo.user_label(user)}", gr.update()
        except UnknownUserError as err:
            gr.Warning(str(err))
            return _empty(["item"]), _empty(["item"]), _empty(["item"]), "### No such user", f"⚠️ {err}"

    def forget(user, method, progress=gr.Progress()):
        demo = get_demo(progress)
        unchanged = [gr.update()] * 6
        try:
            result = demo.forget(user, method or METHODS[0], progress=lambda f, m: progress(f, desc=m))
        except (UnknownUserError, MethodUnavailableError) as err:
            gr.Warning(str(err))
            return [f"⚠️ {err}"] + unchanged + [gr.update()]
        own = result.own_before.rename(columns={"P(like)": "P(like) before"})
        own["P(like) after"] = result.own_after["P(like)"].to_numpy()
        next_user = demo.default_user()
        return [
            f"Forgot {result.user_id} in {result.seconds:.1f} s. The page now shows another user.",
            gr.update(visible=True),
            _summary_markdown(result),
            result.recs_before,
            result.recs_after,
            comparison_figure(result),
            own,
            gr.update(choices=demo.user_choices(), value=next_user),
        ]

    def reset(progress=gr.Progress()):
        demo = get_demo(progress)
        demo.reset()
        return (
            f"Reset: the original model (version {demo.recommender.version}) and all {len(demo.users())} users "
            "are back.",
            gr.update(visible=False),
            gr.update(choices=demo.user_choices(), value=demo.default_user()),
        )

    def ledger_status(user):
        demo = get_demo()
        return {"user_in_ledger": demo.in_ledger(user), **demo.check_model()}

    with gr.Blocks(title="hf_recunlearn — forget a user") as app:
        gr.Markdown(INTRO)
        model_info = gr.Markdown("Loading the recommender… (the first start builds the demo model, about a minute)",
                                 elem_id="model-info")
        status = gr.Markdown("", elem_id="status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=280):
                # Custom values are allowed so that API calls (and stale pages) reach the app, which answers an unknown
                # or forgotten user with a message instead of a validation error.
                user = gr.Dropdown(
                    label="User (type to search)", choices=[], elem_id="user", filterable=True, allow_custom_value=True
                )
                method = gr.Radio(list(METHODS), value=METHODS[0], label="Forgetting method", elem_id="method")
                with gr.Row():
                    forget_btn = gr.Button("Forget this user", variant="stop", elem_id="forget-btn")
                    reset_btn = gr.Button("Reset demo", elem_id="reset-btn")
                history = gr.Dataframe(
                    label="Their latest ratings",
                    elem_id="history",
                    interactive=False,
                    wrap=True,
                    column_widths=["40%", "28%", "13%", "19%"],
                    max_height=900,
                )
            with gr.Column(scale=3, min_width=360):
                user_heading = gr.Markdown("### Pick a user", elem_id="user-heading")
                recs = gr.Dataframe(
                    label=f"Top-{settings.top_k} recommendations (items they have not rated)",
                    elem_id="recs",
                    interactive=False,
                    wrap=True,
                    column_widths=["9%", "46%", "30%", "15%"],
                )
                own = gr.Dataframe(label="P(like) of their own training items", elem_id="own", interactive=False)
        with gr.Column(visible=False, elem_id="after-panel") as after_panel:
            gr.Markdown("## Before and after forgetting")
            summary = gr.Markdown(elem_id="forget-summary")
            with gr.Row():
                recs_before = gr.Dataframe(
                    label="Before: top recommendations",
                    elem_id="recs-before",
                    wrap=True,
                    interactive=False,
                    column_widths=["10%", "44%", "15%", "14%", "17%"],
                    max_height=900,
                )
                recs_after = gr.Dataframe(
                    label="After: top recommendations",
                    elem_id="recs-after",
                    wrap=True,
                    interactive=False,
                    column_widths=["9%", "37%", "13%", "11%", "13%", "17%"],
                    max_height=900,
                )
            plot = gr.Plot(label="P(like) before vs after", elem_id="plot")
            own_compare = gr.Dataframe(
                label="Their own training items: P(like) before and after", elem_id="own-compare", interactive=False
            )

        app.load(init, outputs=[user, model_info], api_name="init")
        user.change(
            show_user, inputs=user, outputs=[history, recs, own, user_heading, status], api_name="recommend"
        )
        forget_btn.click(
            forget,
            inputs=[user, method],
            outputs=[status, after_panel, summary, recs_before, recs_after, plot, own_compare, user],
            api_name="forget",
            concurrency_limit=1,
            concurrency_id="model",
        )
        reset_btn.click(
            reset, outputs=[status, after_panel, user], api_name="reset", concurrency_limit=1, concurrency_id="model"
        )
        # API-only endpoints (no visible control): the users the model holds, and the ledger status of one user.
        gr.Button(visible=False).click(ledger_status, inputs=user, outputs=gr.JSON(visible=False), api_name="ledger")
        gr.Button(visible=False).click(lambda: get_demo().users(), outputs=gr.JSON(visible=False), api_name="users")
    return app


if __name__ == "__main__":
    # Spaces sets GRADIO_SERVER_NAME=0.0.0.0; locally the server stays on 127.0.0.1.
    build_app().queue().launch(css=CSS)
