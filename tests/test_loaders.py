"""The loaders against small files in exactly the real formats (tests/fixtures), and against broken copies of them."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hf_recunlearn.data import loaders
from hf_recunlearn.data.core import DataFormatError, RecData
from hf_recunlearn.data.loaders import (
    TALLREC_ALPACA_PROMPT_TEMPLATE,
    load_bookcrossing,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_latest_small,
    load_tallrec_json,
)


FIXTURES = Path(__file__).parent / "fixtures"
TABLE_LOADERS = {
    "ml-100k": load_movielens_100k,
    "ml-1m": load_movielens_1m,
    "ml-latest-small": load_movielens_latest_small,
    "bookcrossing": load_bookcrossing,
}


def copy_fixture(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def replace_line(path: Path, lineno: int, new_line: str, encoding: str = "latin-1") -> None:
    """Replace 1-based line `lineno` of `path`, keeping the file's bytes, encoding and line endings elsewhere."""
    data = path.read_bytes()
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    lines = data.split(eol)
    lines[lineno - 1] = new_line.encode(encoding)
    path.write_bytes(eol.join(lines))


def row(data: RecData, user_id: str, item_id: str) -> dict:
    inter = data.interactions
    match = inter[(inter["user_id"] == user_id) & (inter["item_id"] == item_id)]
    assert len(match) == 1, f"expected one rating of {item_id} by {user_id}, found {len(match)}"
    return match.iloc[0].to_dict()


def item(data: RecData, item_id: str) -> dict:
    match = data.items[data.items["item_id"] == item_id]
    assert len(match) == 1
    return match.iloc[0].to_dict()


def assert_common_contract(data: RecData) -> None:
    inter = data.interactions
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert pd.api.types.is_string_dtype(inter["user_id"]) and pd.api.types.is_string_dtype(inter["item_id"])
    assert inter["rating"].dtype == "float64" and inter["timestamp"].dtype == "int64"
    assert inter["timestamp"].is_monotonic_increasing
    assert set(inter["item_id"]) <= set(data.items["item_id"])
    assert data.items["item_id"].is_unique


# ---------------------------------------------------------------------------------------------------------------------
# The fixtures load with the right content


def test_movielens_100k():
    data = load_movielens_100k(FIXTURES / "ml-100k")
    assert_common_contract(data)
    assert (data.name, data.like_threshold, data.item_kind) == ("movielens-100k", 3.0, "movie")
    # 39 lines in u.data, one of them rates item 1682, which u.item does not list
    assert len(data.interactions) == 38 and "1682" not in set(data.interactions["item_id"])
    assert data.num_users == 6 and data.num_items == 22
    assert row(data, "1", "9") == {"user_id": "1", "item_id": "9", "rating": 5.0, "timestamp": 878894297}
    assert int((data.interactions["rating"] > data.like_threshold).sum()) == 16
    # the 19 flags map to genre names in u.genre's order
    assert item(data, "1") == {"item_id": "1", "title": "Toy Story (1995)", "genres": "Animation|Children's|Comedy"}
    assert item(data, "17")["genres"] == "Action|Comedy|Crime|Horror|Thriller"
    assert item(data, "267") == {"item_id": "267", "title": "unknown", "genres": "unknown"}
    # u.item is latin-1
    assert b"Mis\xe9rables" in (FIXTURES / "ml-100k" / "u.item").read_bytes()
    assert item(data, "21")["title"] == "Misérables, Les (1995)"
    # the earliest rating comes first
    first = data.interactions.iloc[0].to_dict()
    assert first == {"user_id": "1", "item_id": "21", "rating": 5.0, "timestamp": 874965758}


def test_movielens_1m():
    data = load_movielens_1m(FIXTURES / "ml-1m")
    assert_common_contract(data)
    assert (data.name, data.like_threshold, data.item_kind) == ("movielens-1m", 3.0, "movie")
    assert len(data.interactions) == 42  # 43 lines; movie 3952 is not in movies.dat
    assert data.num_users == 4 and data.num_items == 25
    assert row(data, "1", "1193") == {"user_id": "1", "item_id": "1193", "rating": 5.0, "timestamp": 978300760}
    assert int((data.interactions["rating"] > 3).sum()) == 27
    assert item(data, "1197")["genres"] == "Action|Adventure|Comedy|Romance"
    assert item(data, "73")["title"] == "Misérables, Les (1995)"
    assert b"Mis\xe9rables" in (FIXTURES / "ml-1m" / "movies.dat").read_bytes()
    # user 1 rated 1197 and 594 in the same second: ties are broken by item id, so the order is deterministic
    tied = data.interactions[data.interactions["timestamp"] == 978302268]
    assert list(tied["item_id"]) == ["1197", "594"]
    assert data.interactions.iloc[0]["item_id"] == "73"  # 978297018, the earliest


def test_movielens_latest_small():
    data = load_movielens_latest_small(FIXTURES / "ml-latest-small")
    assert_common_contract(data)
    assert (data.name, data.like_threshold) == ("movielens-latest-small", 3.0)
    assert len(data.interactions) == 29  # 30 ratings; movie 999999 is not in movies.csv
    assert data.num_items == 18
    assert row(data, "4", "11") == {"user_id": "4", "item_id": "11", "rating": 3.5, "timestamp": 1537109083}
    assert set(data.interactions["rating"]) & {1.5, 2.5, 3.5}  # half stars survive
    assert int((data.interactions["rating"] > 3).sum()) == 16  # 3.5 is a like, 3.0 is not
    assert item(data, "11")["title"] == "American President, The (1995)"  # quoted, with a comma
    assert item(data, "26840")["title"] == '"Great Performances" Cats (1998)'  # doubled quotes
    assert item(data, "114335")["genres"] == ""  # "(no genres listed)"
    assert item(data, "1")["genres"] == "Adventure|Animation|Children|Comedy|Fantasy"
    assert item(data, "73")["title"] == "Misérables, Les (1995)"  # UTF-8 here
    assert data.interactions.iloc[0]["timestamp"] == 964980868


def test_bookcrossing():
    data = load_bookcrossing(FIXTURES / "bookcrossing")
    assert_common_contract(data)
    assert (data.name, data.like_threshold, data.item_kind) == ("bookcrossing", 5.0, "book")
    # 36 records: 13 implicit (0) ratings dropped, and 3 explicit ones on ISBNs missing from BX-Books.csv
    assert len(data.interactions) == 20
    assert (data.interactions["rating"] > 0).all()
    assert int((data.interactions["rating"] > 5).sum()) == 17
    assert data.num_users == 5 and data.num_items == 17
    # no timestamps in BookCrossing: the position among the file's records (line - 2), implicit ones counted
    assert row(data, "276744", "3404921038") == {
        "user_id": "276744", "item_id": "3404921038", "rating": 9.0, "timestamp": 10
    }
    assert row(data, "278418", "0060973129")["timestamp"] == 35
    assert list(data.interactions["user_id"]) == sorted(data.interactions["user_id"])  # file order is kept
    # the author is stored in `genres`; HTML entities and backslash-escaped quotes are unescaped
    assert item(data, "0195153448") == {
        "item_id": "0195153448", "title": "Classical Mythology", "genres": "Mark P. O. Morford"
    }
    assert item(data, "0380973839")["title"].startswith("Martha Stewart's Hors D'oeuvres: The Creation & Presentation")
    assert item(data, "0393320928")["title"] == (
        "\"Surely You're Joking, Mr. Feynman!\": Adventures of a Curious Character"
    )
    # the dump's broken quoting on this ISBN is split back into title and author
    assert item(data, "078946697X") == {
        "item_id": "078946697X",
        "title": "DK Readers: Creating the X-Men, How It All Began (Level 4: Proficient Readers)",
        "genres": "Michael Teitelbaum",
    }
    # latin-1
    assert b"Garc\xeda M\xe1rquez" in (FIXTURES / "bookcrossing" / "BX-Books.csv").read_bytes()
    assert item(data, "3404921038")["genres"] == "Gabriel García Márquez"


@pytest.mark.parametrize("name", list(TABLE_LOADERS))
def test_bulk_parse_and_line_scan_agree(name, monkeypatch):
    """The fast pandas path and the line-by-line scan (used to locate errors) read the same data."""
    fast = TABLE_LOADERS[name](FIXTURES / name)
    monkeypatch.setattr(loaders, "_try_bulk", lambda *args: None)
    slow = TABLE_LOADERS[name](FIXTURES / name)
    pd.testing.assert_frame_equal(fast.interactions, slow.interactions)
    pd.testing.assert_frame_equal(fast.items, slow.items)


@pytest.mark.parametrize("name", list(TABLE_LOADERS))
def test_line_endings_and_blank_lines_do_not_matter(name, tmp_path):
    reference = TABLE_LOADERS[name](FIXTURES / name)
    root = copy_fixture(tmp_path, name)
    for path in root.iterdir():
        data = path.read_bytes()
        lf = data.replace(b"\r\n", b"\n")
        swapped = lf if lf != data else lf.replace(b"\n", b"\r\n")
        path.write_bytes(swapped + b"\n\n")  # trailing blank lines too
    data = TABLE_LOADERS[name](root)
    pd.testing.assert_frame_equal(reference.interactions, data.interactions)
    pd.testing.assert_frame_equal(reference.items, data.items)


def test_tallrec_directory():
    data = load_tallrec_json(FIXTURES / "tallrec")
    assert list(data) == ["train", "valid", "test"]
    assert [data[split].num_rows for split in data] == [6, 3, 4]
    train = data["train"]
    assert train.column_names == ["sample_id", "user_id", "item_id", "timestamp", "prompt", "completion", "label"]
    assert train.features["label"].dtype == "int64" and train.features["timestamp"].dtype == "int64"
    raw = json.loads((FIXTURES / "tallrec" / "train.json").read_text())
    first = train[0]
    assert first == {
        "sample_id": "train-0",
        "user_id": "anon-train-0",
        "item_id": "Perez Family, The (1995)",
        "timestamp": 0,
        "prompt": f"### Instruction:\n{raw[0]['instruction']}\n\n### Input:\n{raw[0]['input']}\n\n### Response:\n",
        "completion": "No.",
        "label": 0,
    }
    assert first["prompt"].endswith('Whether the user will like the target movie "Perez Family, The (1995)"?'
                                    "\n\n### Response:\n")
    assert train[1]["item_id"] == "Misérables, Les (1995)" and train[1]["label"] == 1
    assert data["test"][3]["item_id"] == "What's Eating Gilbert Grape? (1993)"  # a '?' inside the title
    for split in data:
        rows = data[split]
        raw = json.loads((FIXTURES / "tallrec" / f"{split}.json").read_text())
        assert rows["label"] == [1 if sample["output"] == "Yes." else 0 for sample in raw]
        assert rows["completion"] == [sample["output"] for sample in raw]
        assert rows["sample_id"] == [f"{split}-{i}" for i in range(len(raw))]
        assert rows["timestamp"] == list(range(len(raw)))
        assert len(set(rows["user_id"])) == len(raw)  # one pseudo user per sample


def test_tallrec_single_book_file_and_templates(tmp_path):
    data = load_tallrec_json(FIXTURES / "tallrec" / "book-test.json")
    assert list(data) == ["train"]
    # both ways TALLRec's scripts write a book target: ""T" written by A"? and "T" written by A?
    assert data["train"]["item_id"] == [
        "Epitaph for a Peach: Four Seasons on My Family Farm",
        "Breaking Free from Compulsive Eating",
        "What If?: The World's Foremost Military Historians Imagine What Might Have Been",
    ]
    assert data["train"]["label"] == [0, 1, 1]
    alpaca = load_tallrec_json(FIXTURES / "tallrec" / "book-test.json", prompt_template=TALLREC_ALPACA_PROMPT_TEMPLATE)
    assert alpaca["train"][0]["prompt"].startswith("Below is an instruction that describes a task")
    assert alpaca["train"][0]["prompt"].endswith(data["train"][0]["prompt"])
    with pytest.raises(ValueError, match="`prompt_template` must be a str.format template"):
        load_tallrec_json(FIXTURES / "tallrec", prompt_template="{instruction} {user}")
    # a directory with only some of the three files
    shutil.copy(FIXTURES / "tallrec" / "test.json", tmp_path / "test.json")
    assert list(load_tallrec_json(tmp_path)) == ["test"]


# ---------------------------------------------------------------------------------------------------------------------
# Malformed lines: the error names the file and the 1-based line, and shows the line


MALFORMED = [
    # (fixture, file, line, replacement, words the message must contain)
    ("ml-100k", "u.data", 5, "1\t5\t1", "expected 4 fields, found 3"),
    ("ml-100k", "u.data", 7, "1\t17\tfive\t877549414", "(rating) is 'five', not a number"),
    ("ml-100k", "u.data", 9, "2\t4\t3\t888652255.5", "(timestamp) is '888652255.5', not an integer"),
    ("ml-100k", "u.data", 39, "1\t21\t5\t874965758\t0", "expected 4 fields, found 5"),
    ("ml-100k", "u.item", 4, "4|Get Shorty (1995)|01-Jan-1995||http://x|0|1|0", "expected 24 fields, found 8"),
    ("ml-100k", "u.item", 6, "6|Shanghai Triad (1995)|01-Jan-1995||u" + "|2" + "|0" * 18, "(unknown) is '2'"),
    ("ml-1m", "ratings.dat", 10, "1::919::4", "expected 4 fields, found 3"),
    ("ml-1m", "ratings.dat", 12, "one::938::4::978301752", "(user_id) is 'one', not an integer"),
    ("ml-1m", "ratings.dat", 43, "10::3952::5::yesterday", "(timestamp) is 'yesterday'"),
    ("ml-1m", "movies.dat", 3, "3::Grumpier Old Men (1995)", "expected 3 fields, found 2"),
    ("ml-latest-small", "ratings.csv", 4, "1,6,four,964982224", "(rating) is 'four', not a number"),
    ("ml-latest-small", "ratings.csv", 1, "user,movie,rating,timestamp", "the header line is not"),
    ("ml-latest-small", "ratings.csv", 31, "4,999999,4.5", "expected 4 fields, found 3"),
    ("ml-latest-small", "movies.csv", 12, '11,"American President, The (1995),Comedy', "cannot be split into fields"),
    ("bookcrossing", "BX-Book-Ratings.csv", 8, '"276744";"074322678X"', "expected 3 fields, found 2"),
    ("bookcrossing", "BX-Book-Ratings.csv", 9, '"276744";"0195153448";"five"', "(rating) is 'five'"),
    ("bookcrossing", "BX-Book-Ratings.csv", 3, '"anonymous";"0155061224";"5"', "(user_id) is 'anonymous'"),
    ("bookcrossing", "BX-Books.csv", 5, '"0374157065";"Flu";"Gina Bari Kolata";"1999";"x";"y";"z"', "found 7"),
]


@pytest.mark.parametrize("fixture,filename,lineno,new_line,problem", MALFORMED)
def test_malformed_line_is_located(tmp_path, fixture, filename, lineno, new_line, problem):
    root = copy_fixture(tmp_path, fixture)
    replace_line(root / filename, lineno, new_line)
    with pytest.raises(DataFormatError) as err:
        TABLE_LOADERS[fixture](root)
    message = str(err.value)
    assert f"{root / filename}, line {lineno}:" in message
    assert problem in message
    assert repr(new_line) in message  # the offending line is shown
    assert "expected:" in message  # and the expected format


def test_first_bad_line_is_reported_and_blank_lines_are_counted(tmp_path):
    root = copy_fixture(tmp_path, "ml-1m")
    replace_line(root / "ratings.dat", 3, "")  # a blank line: skipped, but it still counts
    replace_line(root / "ratings.dat", 20, "1::2018::x::978301777")
    replace_line(root / "ratings.dat", 30, "garbage")
    with pytest.raises(DataFormatError, match=r"ratings.dat, line 20: field 3 \(rating\)"):
        load_movielens_1m(root)


def test_long_offending_line_is_truncated(tmp_path):
    root = copy_fixture(tmp_path, "ml-100k")
    replace_line(root / "u.data", 2, "x" * 5000)
    with pytest.raises(DataFormatError) as err:
        load_movielens_100k(root)
    assert "u.data, line 2:" in str(err.value) and len(str(err.value)) < 1000


def test_invalid_utf8_in_latest_small(tmp_path):
    root = copy_fixture(tmp_path, "ml-latest-small")
    replace_line(root / "movies.csv", 16, '73,"Misérables, Les (1995)",Drama|War', encoding="latin-1")
    with pytest.raises(DataFormatError, match=r"movies.csv, line 16: bytes that are not valid utf-8"):
        load_movielens_latest_small(root)


def test_duplicate_item_id(tmp_path):
    root = copy_fixture(tmp_path, "ml-1m")
    replace_line(root / "movies.dat", 5, "1::Toy Story (1995)::Animation|Children's|Comedy")
    with pytest.raises(DataFormatError, match=r"movies.dat, line 5: item id '1' is already defined on line 1"):
        load_movielens_1m(root)


@pytest.mark.parametrize(
    "fixture,filename,content,problem",
    [
        ("ml-100k", "u.data", b"", "is empty"),
        ("ml-1m", "movies.dat", b"\n\n", "is empty"),
        ("ml-latest-small", "ratings.csv", b"userId,movieId,rating,timestamp\n", "has a header line but no records"),
        ("bookcrossing", "BX-Books.csv", b"", "is empty"),
    ],
)
def test_empty_file(tmp_path, fixture, filename, content, problem):
    root = copy_fixture(tmp_path, fixture)
    (root / filename).write_bytes(content)
    with pytest.raises(DataFormatError, match=problem) as err:
        TABLE_LOADERS[fixture](root)
    assert str(root / filename) in str(err.value)


# ---------------------------------------------------------------------------------------------------------------------
# Missing files


@pytest.mark.parametrize(
    "fixture,spec,filename",
    [
        ("ml-100k", "movielens-100k", "u.data"),
        ("ml-100k", "movielens-100k", "u.item"),
        ("ml-1m", "movielens-1m", "ratings.dat"),
        ("ml-1m", "movielens-1m", "movies.dat"),
        ("ml-latest-small", "movielens-latest-small", "movies.csv"),
        ("bookcrossing", "bookcrossing", "BX-Book-Ratings.csv"),
        ("bookcrossing", "bookcrossing", "BX-Books.csv"),
    ],
)
def test_missing_file(tmp_path, fixture, spec, filename):
    root = copy_fixture(tmp_path, fixture)
    (root / filename).unlink()
    with pytest.raises(FileNotFoundError) as err:
        TABLE_LOADERS[fixture](root)
    assert f"{spec}:{root} expects {root / filename}" in str(err.value)


@pytest.mark.parametrize("fixture", list(TABLE_LOADERS))
def test_missing_directory(tmp_path, fixture):
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        TABLE_LOADERS[fixture](tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_missing_file_points_to_nested_directory(tmp_path):
    copy_fixture(tmp_path, "ml-100k")  # tmp_path/ml-100k/u.data: the user passed the archive's parent
    with pytest.raises(FileNotFoundError, match=r"Found u.data in .*ml-100k: pass that directory"):
        load_movielens_100k(tmp_path)


def test_file_instead_of_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a file"):
        load_movielens_100k(FIXTURES / "ml-100k" / "u.data")


def test_tallrec_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tallrec_json(tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match=r"train.json, valid.json and/or test.json.*none of them exists"):
        load_tallrec_json(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# Malformed TALLRec files


def test_tallrec_bad_sample_is_located(tmp_path):
    samples = json.loads((FIXTURES / "tallrec" / "valid.json").read_text())
    samples[2]["output"] = "Maybe."
    path = tmp_path / "valid.json"
    path.write_text(json.dumps(samples, indent=4))
    with pytest.raises(DataFormatError) as err:
        load_tallrec_json(path)
    # "[" on line 1, then 5 lines per sample: sample 2 opens on line 12
    assert path.read_text().split("\n")[11] == "    {"
    assert f"{path}, sample 2 (line 12): 'output' is 'Maybe.', not 'Yes.' or 'No.'" in str(err.value)


@pytest.mark.parametrize(
    "mutate,problem",
    [
        (lambda s: s.pop("input"), "the key 'input' is missing"),
        (lambda s: s.update(output=1), "'output' is a JSON int, not a string"),
        (lambda s: s.update(input="User Preference: \nUser Unpreference: \nWhat now?"), "'input' does not end with"),
    ],
)
def test_tallrec_bad_sample_fields(tmp_path, mutate, problem):
    samples = json.loads((FIXTURES / "tallrec" / "test.json").read_text())
    mutate(samples[0])
    path = tmp_path / "test.json"
    path.write_text(json.dumps(samples, indent=4))
    with pytest.raises(DataFormatError, match="sample 0 \\(line 2\\)") as err:
        load_tallrec_json(tmp_path)
    assert problem in str(err.value)


def test_tallrec_invalid_json_and_empty(tmp_path):
    path = tmp_path / "train.json"
    text = (FIXTURES / "tallrec" / "train.json").read_text().split("\n")
    assert text[5] == "    },"
    text[5] = "    }"  # drop the comma between the first two samples: the parser stops at the next "{"
    path.write_text("\n".join(text))
    with pytest.raises(DataFormatError, match=r"train.json, line 7: not valid JSON \(Expecting ',' delimiter"):
        load_tallrec_json(tmp_path)
    path.write_text("[]")
    with pytest.raises(DataFormatError, match="empty list"):
        load_tallrec_json(path)
    path.write_text("")
    with pytest.raises(DataFormatError, match="is empty"):
        load_tallrec_json(path)
    path.write_text('{"instruction": "x"}')
    with pytest.raises(DataFormatError, match="not a list"):
        load_tallrec_json(path)
