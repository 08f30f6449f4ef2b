"""Gradio Space: one screen, one user — what forgetting them did to their recommendations.

The model logic lives in `forgetting_demo.py` next to this file ([`DemoRecommender`]); this file lays out the page,
builds the demo at startup in a background thread (the page shows the real progress), and wires the events.
`build_app()` returns the `gr.Blocks`; the server starts only when the file is run (`python app.py`, as Spaces does).
Configuration: environment variables and Space secrets, see README.md.
"""

from __future__ import annotations

import html
import logging
import os
import threading
import time
from pathlib import Path

import gradio as gr

from forgetting_demo import (
    METHODS,
    DemoRecommender,
    ForgetResult,
    MethodUnavailableError,
    SpaceSettings,
    UserError,
)


logger = logging.getLogger(__name__)

SALT_SECRET = "HF_RECUNLEARN_LEDGER_SALT"

INTRO = (
    "## Forget me — what unlearning did for one user\n"
    "A small language model recommends films (P(like) = its answer to *“will this user like it?”*). Some users love "
    "a **private franchise** (◆) that nobody else rated: the model can only know it from them. Pick one, press "
    "**Forget**, and compare their top-10 before and after. The data is synthetic."
)

GLOSSARY = (
    "<div id='glossary'>"
    "<span title='APA splits the users into K shards and trains one LoRA adapter per shard; each user lives in one "
    "shard.'><b>shard</b>: one slice of the users, with its own small adapter.</span><br>"
    "<span title='Every training or forgetting event writes a new, complete version of the model.'><b>version</b>: "
    "one state of the model; every forget writes the next one.</span><br>"
    "<span title='Salted hashes of every training sample and user, by shard: it says which shard to retrain, and "
    "names no one.'><b>ledger</b>: which shard holds whose data, as salted hashes.</span>"
    "</div>"
)

CSS = """
#top-lists { gap: 12px; }
table.toplist { width: 100%; border-collapse: collapse; font-size: 0.9em; }
table.toplist caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
table.toplist td, table.toplist th { padding: 2px 6px; border-bottom: 1px solid var(--border-color-primary); }
table.toplist td.p { text-align: right; font-variant-numeric: tabular-nums; }
table.toplist tr[data-status="left"] td { color: #b42318; }
table.toplist tr[data-status="entered"] td { color: #067647; }
table.toplist tr[data-private="1"] td.item { font-weight: 600; }
#verdict { min-height: 2.4em; }
#glossary { font-size: 0.85em; opacity: 0.85; }
"""


# ------------------------------------------------------------------------------------------------------------------
# Startup: the salt secret, and the demo built in the background with real progress
# ------------------------------------------------------------------------------------------------------------------


def install_salt_secret(environ=None) -> str | None:
    """
    Write the ledger's salt from the `HF_RECUNLEARN_LEDGER_SALT` Space secret (the hex in the `.salt` file the
    model was trained with) into the salt folder, mode 0600, where forgetting looks for it. Returns its id.
    """
    from hf_recunlearn.partition import default_salt_dir, salt_id_of

    env = os.environ if environ is None else environ
    value = (env.get(SALT_SECRET) or "").strip()
    if not value:
        return None
    try:
        salt = bytes.fromhex(value)
    except ValueError as err:
        raise ValueError(
            f"The {SALT_SECRET} secret must be the hex text of the ledger's `.salt` file, got {len(value)} "
            "characters that are not hex. Copy the file's content from the machine that trained the model."
        ) from err
    folder = default_salt_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{salt_id_of(salt)}.salt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(salt.hex())
    return salt_id_of(salt)


class DemoLoader:
    """Loads (or builds, once per cache) the demo in a background thread and reports real progress."""

    def __init__(self, settings: SpaceSettings):
        self.settings = settings
        self.demo: DemoRecommender | None = None
        self.error: Exception | None = None
        self.fraction, self.message = 0.0, "Starting"
        self.started = time.monotonic()
        self.seconds: float | None = None
        self._thread = threading.Thread(target=self._run, name="demo-loader", daemon=True)

    def start(self) -> "DemoLoader":
        if not self._thread.is_alive() and self.demo is None:
            self._thread.start()
        return self

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def _run(self) -> None:
        try:
            self.demo = DemoRecommender.load(self.settings, progress=self._progress)
        except Exception as err:  # noqa: BLE001 - shown on the page, and logged
            logger.exception("Loading the demo failed")
            self.error = err
        self.seconds = time.monotonic() - self.started
        if self.demo is not None:
            logger.info("Demo ready in %.1f s", self.seconds)

    def wait(self, timeout: float | None = None) -> DemoRecommender:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        if self.demo is None:
            raise TimeoutError("The demo is still being built.")
        return self.demo

    def status_line(self) -> str:
        if self.error is not None:
            return f"⚠ **The model could not be loaded:** {self.error}"
        elapsed = time.monotonic() - self.started
        return (
            f"**Preparing the model ({self.fraction:.0%}, {elapsed:.0f} s so far):** {self.message}. "
            "This happens once per start; the page updates by itself."
        )


# ------------------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------------------


def _model_markdown(demo: DemoRecommender) -> str:
    return f"**Model:** {demo.model_line()}"


def _row(rank, item, private, p, status="", status_text="") -> str:
    lock = "◆ " if private else ""
    return (
        f"<tr data-private='{int(bool(private))}' data-status='{status}' data-p='{float(p):.4f}'>"
        f"<td>{int(rank)}</td><td class='item'>{lock}{html.escape(str(item))}</td>"
        f"<td class='p'>{float(p):.3f}</td><td>{html.escape(status_text)}</td></tr>"
    )


def _table(role: str, caption: str, rows: list[str], last_header: str = "") -> str:
    head = f"<tr><th>#</th><th>film</th><th>P(like)</th><th>{last_header}</th></tr>"
    return f"<table class='toplist' data-role='{role}'><caption>{caption}</caption>{head}{''.join(rows)}</table>"


def current_list_html(demo: DemoRecommender, user: str, frame) -> str:
    rows = [_row(r["rank"], r["item"], r["private"], r["P(like)"]) for _, r in frame.iterrows()]
    forgotten = " (forgotten)" if user in demo.forgotten else ""
    caption = f"{html.escape(user)}{forgotten}: top-{len(frame)} now"
    return _table("now", caption, rows)


def before_html(result: ForgetResult) -> str:
    rows = [
        _row(r["rank"], r["item"], r["private"], r["P(like)"], r["status"], "left ✕" if r["status"] == "left" else "")
        for _, r in result.top_before().iterrows()
    ]
    caption = f"Before: the top-{result.top_k} you saw (version {result.version_before})"
    return _table("before", caption, rows, "after")


def after_html(result: ForgetResult) -> str:
    rows = []
    for _, r in result.top_after().iterrows():
        text = "entered +" if r["status"] == "entered" else r["status"]
        rows.append(_row(r["rank"], r["item"], r["private"], r["P(like)"], r["status"], text))
    served = f"version {result.version_after}" if result.exact else "the E2URec copy"
    caption = f"After: {html.escape(result.user_id)}'s top-{result.top_k} on {served}"
    note = "<p style='font-size:0.8em'>Arrows only where P(like) moved by more than 0.02; · = a near-tie swap.</p>"
    return _table("after", caption, rows, "change") + note


def own_html(frame, result: ForgetResult | None = None) -> str:
    """The user's own rated items: P(like) now, or before / after / never-seen reference after a forget."""
    if result is None:
        rows = "".join(
            f"<tr data-private='{int(r['private'])}'><td>{'◆ ' if r['private'] else ''}{html.escape(r['item'])}</td>"
            f"<td>{r['label']}</td><td class='p'>{r['P(like)']:.3f}</td></tr>"
            for _, r in frame.iterrows()
        )
        head = "<tr><th>their rated film</th><th>they</th><th>P(like) now</th></tr>"
        return f"<table class='toplist' data-role='own'><caption>Their own training items</caption>{head}{rows}</table>"
    own = result.own
    rows = "".join(
        f"<tr data-private='{int(r['private'])}' data-before='{r['before']:.4f}' data-after='{r['after']:.4f}' "
        f"data-reference='{r['reference']:.4f}'><td>{'◆ ' if r['private'] else ''}{html.escape(r['item'])}</td>"
        f"<td>{r['label']}</td><td class='p'>{r['before']:.3f}</td><td class='p'>{r['after']:.3f}</td>"
        f"<td class='p'>{r['reference']:.3f}</td></tr>"
        for _, r in own.iterrows()
    )
    m = result.own_means()
    mean = (
        f"<tr id='own-mean' data-before='{m['before']:.4f}' data-after='{m['after']:.4f}' "
        f"data-reference='{m['reference']:.4f}'><td><b>mean</b></td><td></td><td class='p'><b>{m['before']:.3f}</b></td>"
        f"<td class='p'><b>{m['after']:.3f}</b></td><td class='p'><b>{m['reference']:.3f}</b></td></tr>"
    )
    head = "<tr><th>their rated film</th><th>they</th><th>before</th><th>after</th><th>never saw them</th></tr>"
    caption = f"Their own training items: P(like). {html.escape(result.reference_note)}"
    return f"<table class='toplist' data-role='own'><caption>{caption}</caption>{head}{mean}{rows}</table>"


def own_figure(values: dict, title: str):
    """P(like) of the user's own rated items (sorted by the first series), one marker style per series."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.2, 3.3), constrained_layout=True)
    first = np.asarray(next(iter(values.values())), dtype=float)
    order = np.argsort(-first)
    styles = {
        "before": dict(color="tab:red", marker="o", s=26),
        "now": dict(color="tab:red", marker="o", s=26),
        "after": dict(color="tab:blue", marker="o", s=22),
        "never saw them": dict(color="0.35", marker="_", s=160, linewidths=2),
    }
    x = np.arange(len(first))
    for name, vals in values.items():
        ax.scatter(x, np.asarray(vals, dtype=float)[order], label=name, **styles.get(name, {}))
    ax.set_ylim(0, 1)
    ax.set_xlabel("their rated films (sorted by the first series)")
    ax.set_ylabel("P(like)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    return fig


# ------------------------------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------------------------------


def build_app(settings: SpaceSettings | None = None, loader: DemoLoader | None = None) -> gr.Blocks:
    """The Space's page. Loading (or building) the model starts here, in the background, not on the first visit."""
    settings = settings or SpaceSettings.from_env()
    loader = (loader or DemoLoader(settings)).start()

    def demo() -> DemoRecommender:
        return loader.wait(timeout=0) if loader.demo is None else loader.demo

    def message(err: Exception) -> str:
        return f"⚠ {err}"

    def show(user):
        """Every panel for one user, on the served model (a forgotten user shows their before → after)."""
        d = demo()
        try:
            status = d.status(user)
        except UserError as err:
            return [message(err), "", "", None, "", gr.update(visible=False)]
        if status == "forgotten":
            result = d.forgotten[user]
            return [
                message(f"{user} was forgotten earlier. " + result.verdict()),
                before_html(result),
                after_html(result),
                own_figure({"before": result.own["before"], "after": result.own["after"],
                            "never saw them": result.own["reference"]}, f"{user}'s own items"),  # fmt: skip
                own_html(None, result),
                gr.update(visible=False),
            ]
        top = d.recommend(user)
        own = d.own_items(user)
        waiting = (
            "<p><i>After forgetting, their new top-10 appears here, with the films that left and entered "
            "marked.</i></p>"
        )
        return [
            f"Showing **{d.user_label(user)}**. Press **Forget this user** to remove them.",
            current_list_html(d, user, top),
            waiting,
            own_figure({"now": own["P(like)"]}, f"{user}'s own items: P(like) now"),
            own_html(own),
            gr.update(visible=False),
        ]

    def history_of(user):
        try:
            return demo().history(user)
        except UserError:
            return None

    def tick():
        """While the model is prepared: the progress line. Once ready: the page, and the timer stops."""
        if loader.demo is None:
            return [loader.status_line(), gr.update(), gr.update(), gr.update(), gr.update(active=loader.error is None)]
        d = loader.demo
        return [
            _model_markdown(d),
            gr.update(choices=d.user_choices(), value=d.default_user(), interactive=True),
            gr.update(interactive=True),
            gr.update(interactive=True),
            gr.update(active=False),
        ]

    def ask(user, method):
        d = demo()
        try:
            d.status(user)
            if user in d.forgotten:
                d.forget(user, method)  # raises the "forgotten earlier" message
        except UserError as err:
            return message(err), gr.update(visible=False), ""
        what = (
            "retrains the shard that holds their ratings; the new version holds nothing learned from them"
            if method == METHODS[0]
            else "distils an approximate copy of the model that serves everyone until Reset"
        )
        text = f"**Forget {html.escape(user)} with {method}?** This {what}. Only **Reset demo** brings them back."
        return gr.update(), gr.update(visible=True), text

    def lock():
        off = gr.update(interactive=False)
        return [off] * 5 + [gr.update(visible=False)]

    def unlock():
        on = gr.update(interactive=True)
        return [on] * 5

    def forget(user, method, progress=gr.Progress()):
        d = demo()
        try:
            result = d.forget(user, method or METHODS[0], progress=lambda f, m: progress(f, desc=m))
        except (UserError, MethodUnavailableError) as err:
            return [message(err)] + [gr.update()] * 6
        verdict = result.verdict() + (f"\n\n_{result.note}_" if result.note else "")
        return [
            ("✓ " if result.exact else "≈ ") + verdict,
            before_html(result),
            after_html(result),
            own_figure({"before": result.own["before"], "after": result.own["after"],
                        "never saw them": result.own["reference"]}, f"{user}'s own items"),  # fmt: skip
            own_html(None, result),
            _model_markdown(d),
            gr.update(choices=d.user_choices(), value=user),
        ]

    def reset(user):
        d = demo()
        d.reset()
        panels = show(user) if user else show(d.default_user())
        panels[0] = (
            f"Reset: the original model (version {d.recommender.version}) is back, with all "
            f"{len(d.active_users())} users. " + panels[0]
        )
        return panels[:5] + [_model_markdown(d), gr.update(choices=d.user_choices(), value=user or d.default_user())]

    def ledger_status(user):
        d = demo()
        return {"user_in_ledger": d.in_ledger(user), "status": d.status(user), **d.check_model()}

    with gr.Blocks(title="hf_recunlearn — forget a user") as app:
        gr.Markdown(INTRO)
        model_info = gr.Markdown(loader.status_line(), elem_id="model-info")
        with gr.Row(equal_height=True):
            # Custom values reach the app, which answers an unknown id with its own message.
            user = gr.Dropdown(label="User (type to search)", choices=[], elem_id="user", filterable=True,
                               allow_custom_value=True, interactive=False, scale=3)  # fmt: skip
            method = gr.Radio(list(METHODS), value=METHODS[0], label="Forgetting method", elem_id="method", scale=2)
            forget_btn = gr.Button("Forget this user…", variant="stop", elem_id="forget-btn", interactive=False, scale=1)
            reset_btn = gr.Button("Reset demo", elem_id="reset-btn", interactive=False, scale=1)
        with gr.Row(visible=False, elem_id="confirm-row") as confirm_row:
            confirm_text = gr.Markdown(elem_id="confirm-text")
            confirm_btn = gr.Button("Yes, forget them", variant="stop", elem_id="confirm-btn", scale=0)
            cancel_btn = gr.Button("Cancel", elem_id="cancel-btn", scale=0)
        verdict = gr.Markdown("", elem_id="verdict")
        with gr.Row(elem_id="top-lists", equal_height=False):
            before = gr.HTML(elem_id="before")
            after = gr.HTML(elem_id="after")
            plot = gr.Plot(label="P(like) of their own rated films", elem_id="plot", show_label=False)
        gr.HTML(GLOSSARY)
        with gr.Row(equal_height=False):
            own = gr.HTML(elem_id="own")
            history = gr.Dataframe(label="Their latest ratings", elem_id="history", interactive=False, wrap=True)

        timer = gr.Timer(1.0, active=True)
        controls = [user, forget_btn, reset_btn, confirm_btn, cancel_btn]
        panels = [verdict, before, after, plot, own, confirm_row]
        quiet = dict(show_progress="hidden")

        timer.tick(tick, outputs=[model_info, user, forget_btn, reset_btn, timer], api_visibility="private", **quiet)
        user.change(show, inputs=user, outputs=panels, api_name="show", show_progress_on=[verdict])
        user.change(history_of, inputs=user, outputs=history, api_visibility="private", **quiet)
        forget_btn.click(ask, inputs=[user, method], outputs=[verdict, confirm_row, confirm_text], api_name="ask",
                         **quiet)  # fmt: skip
        cancel_btn.click(lambda: ("Cancelled: nothing was forgotten.", gr.update(visible=False)),
                         outputs=[verdict, confirm_row], api_visibility="private", **quiet)  # fmt: skip
        confirm_btn.click(lock, outputs=controls + [confirm_row], api_visibility="private", queue=False, **quiet).then(
            forget, inputs=[user, method], outputs=[verdict, before, after, plot, own, model_info, user],
            api_name="forget", concurrency_limit=1, concurrency_id="model", show_progress_on=[verdict],
        ).then(unlock, outputs=controls, api_visibility="private", queue=False, **quiet)  # fmt: skip
        reset_btn.click(lock, outputs=controls + [confirm_row], api_visibility="private", queue=False, **quiet).then(
            reset, inputs=user, outputs=[verdict, before, after, plot, own, model_info, user], api_name="reset",
            concurrency_limit=1, concurrency_id="model", show_progress_on=[verdict],
        ).then(unlock, outputs=controls, api_visibility="private", queue=False, **quiet)  # fmt: skip
        # API-only endpoints (no visible control): the model line and users, and the ledger status of one user.
        gr.Button(visible=False).click(lambda: _model_markdown(demo()), outputs=gr.Markdown(visible=False),
                                       api_name="model")  # fmt: skip
        gr.Button(visible=False).click(ledger_status, inputs=user, outputs=gr.JSON(visible=False), api_name="ledger")
        gr.Button(visible=False).click(lambda: demo().users(), outputs=gr.JSON(visible=False), api_name="users")
    app.loader = loader
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    install_salt_secret()
    # Spaces sets GRADIO_SERVER_NAME=0.0.0.0; locally the server stays on 127.0.0.1. The model starts loading here,
    # before the first visitor arrives.
    build_app().queue().launch(css=CSS)
