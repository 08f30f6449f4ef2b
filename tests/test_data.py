import numpy as np
import pytest

from hf_recunlearn.data import (
    build_datasets,
    build_samples,
    load_data,
    make_forget_split,
    make_synthetic,
    parse_data_spec,
)
from hf_recunlearn.data.prompts import HistoryItem, get_template

from popularity import item_popularity_auc


COLUMNS = {"sample_id", "user_id", "item_id", "timestamp", "prompt", "completion", "label"}


def test_synthetic_is_deterministic_and_has_niche_users():
    a, b = make_synthetic(num_users=50, seed=3), make_synthetic(num_users=50, seed=3)
    assert a.interactions.equals(b.interactions) and a.items.equals(b.items)
    assert not a.interactions.equals(make_synthetic(num_users=50, seed=4).interactions)
    niche = {u for u, g in a.user_groups.items() if g == "niche"}
    assert len(niche) == 5
    niche_items = set(a.items.loc[a.items["genres"] == "Arthouse", "item_id"])
    raters = set(a.interactions.loc[a.interactions["item_id"].isin(niche_items), "user_id"])
    assert raters and raters <= niche  # only niche users rate niche items
    assert a.items["title"].is_unique
    assert set(a.interactions["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_synthetic_has_learnable_structure():
    """An item's mean like rate in the training split predicts the test split better than chance."""
    splits = build_datasets(make_synthetic(num_users=200), history_len=3)
    assert item_popularity_auc(splits["train"], splits["test"]) > 0.65


def test_templates_render_history_and_target():
    history = [HistoryItem("Heat (1995)", True), HistoryItem("Jumanji (1995)", False)]
    e2u = get_template("e2urec").render(history, "Toy Story (1995)")
    assert e2u == (
        "The user watched the following movies in order: Heat (1995) (liked), Jumanji (1995) (disliked). "
        "Please deduce if he will like the movie Toy Story (1995)."
    )
    tallrec = get_template("tallrec").render(history, "Toy Story (1995)")
    assert 'User Preference: "Heat (1995)"\nUser Unpreference: "Jumanji (1995)"' in tallrec
    assert tallrec.endswith("### Response:\n")
    assert "read the following books" in get_template("e2urec").render(history, "X", item_kind="book")
    with pytest.raises(ValueError, match="template"):
        get_template("alpaca")


def test_build_samples_uses_only_earlier_history():
    data = make_synthetic(num_users=20, seed=1)
    samples = build_samples(data, history_len=2)
    assert COLUMNS <= set(samples.column_names)
    assert list(samples["timestamp"]) == sorted(samples["timestamp"])
    row = samples[0]
    user_rows = data.interactions[data.interactions["user_id"] == row["user_id"]]
    earlier = user_rows[user_rows["timestamp"] < row["timestamp"]]
    titles = dict(zip(data.items["item_id"], data.items["title"]))
    for item in earlier["item_id"].tail(2):
        assert titles[item] in row["prompt"]
    assert row["completion"] == (" Yes" if row["label"] else " No")


def test_presets_split_sizes_and_order():
    data = make_synthetic(num_users=80)
    e2u = build_datasets(data, history_len=3, num_samples=1000)
    assert [len(e2u[s]) for s in ("train", "valid", "test")] == [600, 200, 200]
    assert max(e2u["train"]["timestamp"]) <= min(e2u["valid"]["timestamp"])
    assert max(e2u["valid"]["timestamp"]) <= min(e2u["test"]["timestamp"])
    apa = build_datasets(data, history_len=3, preset="apa", sizes=(100, 50, 60), seed=0)
    assert [len(apa[s]) for s in ("train", "valid", "test")] == [100, 50, 60]
    ids = [set(apa[s]["sample_id"]) for s in ("train", "valid", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    again = build_datasets(data, history_len=3, preset="apa", sizes=(100, 50, 60), seed=0)
    assert again["train"]["sample_id"] == apa["train"]["sample_id"]  # stable across runs


def test_forget_request_by_users_selects_exactly_their_training_samples(synthetic_splits):
    train = synthetic_splits["train"]
    users = sorted(set(train["user_id"]))[:3]
    split = make_forget_split(train, user_ids=users)
    assert set(split.forget["user_id"]) == set(users)
    expected = sum(u in users for u in train["user_id"])
    assert len(split.forget) == expected
    assert not set(split.retain["user_id"]) & set(users)
    assert len(split.forget) + len(split.retain) == len(train)


def test_forget_request_by_samples_and_fraction(synthetic_splits):
    train = synthetic_splits["train"]
    ids = train["sample_id"][:5]
    split = make_forget_split(train, sample_ids=ids)
    assert split.sample_ids == ids and len(split.retain) == len(train) - 5
    users = sorted(set(train["user_id"]))
    frac = make_forget_split(train, fraction=0.2, seed=0)
    assert len(frac.user_ids) == round(0.2 * len(users))
    assert make_forget_split(train, fraction=0.2, seed=0).user_ids == frac.user_ids
    assert make_forget_split(train, fraction=0.2, seed=1).user_ids != frac.user_ids


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"user_ids": ["no-such-user"]}, "user_ids"),
        ({"user_ids": []}, "empty"),
        ({"sample_ids": ["deadbeef"]}, "sample_ids"),
        ({"fraction": 1.5}, "fraction"),
        ({}, "exactly one"),
        ({"user_ids": ["1"], "fraction": 0.2}, "exactly one"),
    ],
)
def test_bad_forget_requests_are_refused(synthetic_splits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_forget_split(synthetic_splits["train"], **kwargs)


@pytest.mark.parametrize(
    "spec, match",
    [("imdb:/data", "Unknown data spec"), ("movielens-1m", "needs a path"), ("synthetic:/x", "takes no path"), ("", "spec")],
)
def test_bad_data_specs_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_data_spec(spec)


def test_missing_data_directory_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="u.data"):
        load_data(f"movielens-100k:{tmp_path}")


def test_real_format_fixtures_build_instruction_datasets():
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    for spec in ("movielens-100k:ml-100k", "movielens-1m:ml-1m", "movielens-latest-small:ml-latest-small",
                 "bookcrossing:bookcrossing", "tallrec:tallrec"):  # fmt: skip
        kind, rel = spec.split(":")
        splits = build_datasets(f"{kind}:{fixtures / rel}", history_len=3)
        assert {"train", "valid", "test"} <= set(splits)
        assert COLUMNS <= set(splits["train"].column_names), spec
        assert len(splits["train"]) > 0, spec
        assert set(np.unique(splits["train"]["label"])) <= {0, 1}
