"""
Loaders for the real data sets, reading the files exactly as distributed.

Every table loader turns a directory into a [`RecData`]; [`load_tallrec_json`] turns TALLRec's instruction files into a
`datasets.DatasetDict` of ready-made prompts. Nothing is downloaded: point a loader at the unpacked archive.

Big files (MovieLens-1M's one million ratings, BookCrossing's 1.1 million) are parsed in bulk with pandas. Only when
the bulk parse fails, or its result does not validate, are the lines scanned one by one, to name the first bad line:
a [`DataFormatError`] always gives the file, the 1-based line number, the offending line (truncated) and the
expected format. A missing directory or file raises `FileNotFoundError` naming the file the data spec expects.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .core import DataFormatError, RecData


__all__ = [
    "MOVIELENS_100K_GENRES",
    "TALLREC_ALPACA_PROMPT_TEMPLATE",
    "TALLREC_PROMPT_TEMPLATE",
    "load_bookcrossing",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_movielens_latest_small",
    "load_tallrec_json",
]

logger = logging.getLogger(__name__)

# The 19 genre flags of `u.item`, in the order of the file (and of `u.genre`).
MOVIELENS_100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# The prompt built from a TALLRec sample: the Alpaca sections TALLRec trains on, without Alpaca's preamble.
TALLREC_PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"

# TALLRec's own `finetune_rec.py` / `evaluate.py` prompt, character for character, for scoring checkpoints trained
# with the authors' code. The `  # noqa: E501` is not a typo here: in their source the linter comment sits inside the
# f-string, so every TALLRec model was trained with it in the prompt.
TALLREC_ALPACA_PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.  # noqa: E501\n\n" + TALLREC_PROMPT_TEMPLATE
)

_MAX_SHOWN = 160  # characters of an offending line quoted in an error message


# ---------------------------------------------------------------------------------------------------------------------
# Table formats


@dataclass(frozen=True)
class _Format:
    """How one file is laid out, for parsing it and for saying what was expected when it is not."""

    spec: str  # data spec name, e.g. "movielens-100k"
    filename: str
    encoding: str
    layout: str  # the fields of a line, in words
    example: str  # one line as it appears in the real file
    columns: tuple[tuple[str, str], ...]  # (name, kind); kind is "int", "float", "flag" (0/1) or "str"
    split: Callable[[str], list[str]]  # one line -> its fields
    header: str | None = None  # line 1 as in the real file, when the file has a header line
    bulk: Callable[[str], pd.DataFrame] | None = None  # fast path: data lines -> frame (may raise); None: no fast path

    @property
    def expected(self) -> str:
        header = f"a header line {self.header!r}, then " if self.header else ""
        encoding = self.encoding.removesuffix("-sig")  # "utf-8-sig" only means a BOM is tolerated
        return f"{header}one line per record: {self.layout}; e.g. {self.example!r} ({self.spec}, {encoding})"


def _bulk_csv(sep: str, columns, *, quoting: int = csv.QUOTE_MINIMAL, replace: tuple[str, str] | None = None):
    """A fast path: pandas' C parser with one dtype per column; it raises on anything it cannot convert."""
    dtypes = {i: {"int": "int64", "float": "float64", "str": str}[kind] for i, (_, kind) in enumerate(columns)}

    def parse(body: str) -> pd.DataFrame:
        if replace is not None:
            body = body.replace(*replace)
        return pd.read_csv(
            io.StringIO(body),
            sep=sep,
            header=None,
            dtype=dtypes,
            quoting=quoting,
            na_filter=False,
            engine="c",
            skip_blank_lines=True,
        )

    return parse


def _split_csv(line: str) -> list[str]:
    return next(csv.reader([line], strict=True))


_BX_BROKEN_QUOTE = re.compile(r'\\";(?!")')


def _split_bookcrossing(line: str) -> list[str]:
    """
    Fields of a BookCrossing line: `;`-separated, every field in double quotes.

    Fields may contain `;` (`&amp;` is everywhere in titles and publishers), so the separator is `";"`, not `;`. The
    dump escapes quotes inside fields with a backslash (`\\"`), and on a few lines the exporter also dropped the
    opening quote of the next field: `"...(Level 4: Proficient Readers)\\";Michael Teitelbaum";"2000"` is a title
    followed by the author, which `\\";` not followed by a quote marks. Lines that are not fully quoted are read as
    plain `;`-separated CSV.
    """
    if len(line) < 2 or line[0] != '"' or line[-1] != '"':
        return next(csv.reader([line], delimiter=";", strict=True))
    fields = line[1:-1].split('";"')
    if '\\"' in line:  # rare: only then pay for the repair and the unescaping
        fields = [part.replace('\\"', '"') for field in fields for part in _BX_BROKEN_QUOTE.split(field)]
    if '""' in line:
        fields = [field.replace('""', '"') for field in fields]
    return fields


def _convert(value: str, kind: str):
    """Convert one field; raises `ValueError` with the reason when it does not have its kind."""
    if kind == "str":
        return value
    if kind == "flag":
        if value.strip() not in ("0", "1"):
            raise ValueError("not a 0/1 flag")
        return int(value)
    if kind == "float":
        try:
            number = float(value)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(number):
            raise ValueError("not a finite number")
        return number
    try:  # int, accepting what pandas' int64 parsing accepts ("4.0")
        number = int(value)
    except ValueError:
        try:
            real = float(value)
        except ValueError:
            raise ValueError("not an integer") from None
        if not real.is_integer():
            raise ValueError("not an integer")
        number = int(real)
    if not -(2**63) <= number < 2**63:
        raise ValueError("an integer out of the 64-bit range")
    return number


def _shown(line: str) -> str:
    return repr(line if len(line) <= _MAX_SHOWN else line[:_MAX_SHOWN] + "...")


def _line_error(path: Path, fmt: _Format, lineno: int, line: str, problem: str) -> DataFormatError:
    return DataFormatError(
        f"{path}, line {lineno}: {problem}.\n  line {lineno}: {_shown(line)}\n  expected: {fmt.expected}"
    )


def _read_text(path: Path, fmt: _Format) -> str:
    data = path.read_bytes()
    try:
        text = data.decode(fmt.encoding)
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        start = data.rfind(b"\n", 0, err.start) + 1
        end = data.find(b"\n", err.start)
        line = data[start : end if end >= 0 else len(data)].decode(fmt.encoding, errors="replace")
        problem = f"bytes that are not valid {fmt.encoding.removesuffix('-sig')} ({err.reason} at byte {err.start})"
        raise _line_error(path, fmt, lineno, line, problem) from None
    if not text.strip():
        raise DataFormatError(f"{path} is empty. Expected {fmt.expected}.")
    return text


def _read_table(path: Path, fmt: _Format) -> tuple[pd.DataFrame, list[int]]:
    """
    Parse `path` as `fmt`: a frame with one column per `fmt.columns` entry (ints as int64, floats as float64) and the
    1-based line number of each row. Line numbers are only known after a line-by-line parse; after a successful bulk
    parse they are empty.
    """
    text = _read_text(path, fmt)
    # Split on "\n" only: str.splitlines() would also break latin-1 text at "\x85" (NEL) and friends.
    lines = text.replace("\r\n", "\n").split("\n")
    first = 0
    if fmt.header is not None:
        _check_header(path, fmt, lines[0])
        first = 1
    num_records = sum(1 for line in lines[first:] if line.strip())
    if num_records == 0:
        raise DataFormatError(f"{path} has a header line but no records. Expected {fmt.expected}.")
    if fmt.bulk is not None:
        frame = _try_bulk(fmt, "\n".join(lines[first:]), num_records)
        if frame is not None:
            return frame, []
    return _parse_lines(path, fmt, lines, first)


def _check_header(path: Path, fmt: _Format, line: str) -> None:
    try:
        fields = [f.strip() for f in fmt.split(line)]
    except (ValueError, csv.Error):
        fields = None
    if fields != fmt.split(fmt.header):
        raise _line_error(path, fmt, 1, line, f"the header line is not {fmt.header!r}")


def _try_bulk(fmt: _Format, body: str, num_records: int) -> pd.DataFrame | None:
    """The bulk parse, or None when it fails or its result does not validate (the caller then scans line by line)."""
    try:
        frame = fmt.bulk(body)
    except (ValueError, OverflowError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError too
        logger.debug("bulk parse of %s failed (%s); scanning it line by line", fmt.filename, err)
        return None
    if frame.shape != (num_records, len(fmt.columns)):  # a field count off, or a stray quote that swallowed lines
        return None
    frame.columns = [name for name, _ in fmt.columns]
    for name, kind in fmt.columns:
        column = frame[name]
        if kind == "float" and not np.isfinite(column.to_numpy()).all():
            return None
        if kind == "str" and column.isna().any():  # a missing trailing field
            return None
    return frame


def _parse_lines(path: Path, fmt: _Format, lines: list[str], first: int) -> tuple[pd.DataFrame, list[int]]:
    """The line-by-line parse: the first bad line raises a `DataFormatError`."""
    names = [name for name, _ in fmt.columns]
    values: list[list] = [[] for _ in names]
    linenos = []
    for index in range(first, len(lines)):
        line = lines[index]
        if not line.strip():
            continue
        lineno = index + 1
        try:
            fields = fmt.split(line)
        except (ValueError, csv.Error) as err:
            raise _line_error(path, fmt, lineno, line, f"the line cannot be split into fields ({err})") from None
        if len(fields) != len(names):
            raise _line_error(path, fmt, lineno, line, f"expected {len(names)} fields, found {len(fields)}")
        for position, ((name, kind), field, column) in enumerate(zip(fmt.columns, fields, values), start=1):
            if kind == "str":
                column.append(field)
                continue
            try:
                column.append(_convert(field, kind))
            except ValueError as err:
                raise _line_error(path, fmt, lineno, line, f"field {position} ({name}) is {field!r}, {err}") from None
        linenos.append(lineno)
    dtypes = {"int": "int64", "flag": "int64", "float": "float64", "str": object}
    frame = pd.DataFrame(
        {name: pd.Series(column, dtype=dtypes[kind]) for (name, kind), column in zip(fmt.columns, values)}
    )
    return frame, linenos


def _require_file(root: Path, fmt: _Format, what: str, expects: str) -> Path:
    """`root / fmt.filename`, or a `FileNotFoundError` that says what the data spec expects and where it looked."""
    spec, name = fmt.spec, fmt.filename
    if not root.exists():
        raise FileNotFoundError(f"{spec}:{root} expects a directory with {expects}, but {root} does not exist.")
    if not root.is_dir():
        raise FileNotFoundError(
            f"{spec}:{root} expects a directory with {expects}, but {root} is a file. "
            "Pass the directory that holds it."
        )
    path = root / name
    if not path.is_file():
        nested = sorted(p.parent for p in root.glob(f"*/{name}"))
        hint = f" Found {name} in {nested[0]}: pass that directory." if nested else ""
        raise FileNotFoundError(f"{spec}:{root} expects {path} ({what}), but it does not exist.{hint}")
    return path


def _first_duplicate(path: Path, ids: pd.Series, linenos: list[int], fmt: _Format) -> None:
    """Raise on the first item id defined twice (item files are parsed line by line, so `linenos` is known)."""
    duplicated = ids.duplicated()
    if duplicated.any():
        row = int(np.argmax(duplicated.to_numpy()))
        earlier = int(np.argmax((ids == ids.iloc[row]).to_numpy()))
        raise DataFormatError(
            f"{path}, line {linenos[row]}: item id {str(ids.iloc[row])!r} is already defined on line "
            f"{linenos[earlier]}. Each item must appear once; expected {fmt.expected}."
        )


def _as_path(path: str | Path) -> Path:
    return Path(path).expanduser()


def _interactions(ratings: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ratings["user_id"].astype(str),
            "item_id": ratings["item_id"].astype(str),
            "rating": ratings["rating"].astype("float64"),
            "timestamp": ratings["timestamp"].astype("int64"),
        }
    )


def _rec_data(spec: str, interactions: pd.DataFrame, items: pd.DataFrame, like_threshold: float, kind: str) -> RecData:
    data = RecData(spec, interactions, items, like_threshold=like_threshold, item_kind=kind)
    dropped = len(interactions) - len(data.interactions)  # RecData drops ratings of items missing from `items`
    if dropped:
        logger.info(
            "%s: dropped %d of %d ratings whose item is not in the item file", spec, dropped, len(interactions)
        )
    return data


# ---------------------------------------------------------------------------------------------------------------------
# MovieLens-100K

_ML100K_RATING_COLUMNS = (("user_id", "int"), ("item_id", "int"), ("rating", "float"), ("timestamp", "int"))
_ML100K_RATINGS = _Format(
    spec="movielens-100k",
    filename="u.data",
    encoding="latin-1",
    layout="user id <TAB> item id <TAB> rating <TAB> unix timestamp (all integers but the rating)",
    example="196\t242\t3\t881250949",
    columns=_ML100K_RATING_COLUMNS,
    split=lambda line: line.split("\t"),
    bulk=_bulk_csv("\t", _ML100K_RATING_COLUMNS, quoting=csv.QUOTE_NONE),
)
_ML100K_ITEMS = _Format(
    spec="movielens-100k",
    filename="u.item",
    encoding="latin-1",
    layout="movie id|title|release date|video release date|IMDb URL|19 genre flags (0/1), 24 '|'-separated fields",
    example="1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)"
    "|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    columns=(("item_id", "int"), ("title", "str"), ("release", "str"), ("video_release", "str"), ("url", "str"))
    + tuple((genre, "flag") for genre in MOVIELENS_100K_GENRES),
    split=lambda line: line.split("|"),
)


def load_movielens_100k(path: str | Path) -> RecData:
    """
    Load MovieLens-100K from the directory of the `ml-100k.zip` archive.

    Reads `u.data` (`user \\t item \\t rating \\t unix_ts`) and `u.item` (`id|title|release|video_release|url|19 genre
    flags`, latin-1). The genre flags become `genres` such as `"Animation|Children's|Comedy"`, in the order of
    [`MOVIELENS_100K_GENRES`] (the flag `unknown` becomes the genre `"unknown"`).

    Args:
        path (`str` or `Path`):
            Directory with `u.data` and `u.item`.

    Returns:
        [`RecData`]: `name="movielens-100k"`, `like_threshold=3` (a like is a rating of 4 or 5), `item_kind="movie"`.

    Raises:
        `FileNotFoundError`: the directory or one of the two files is missing.
        [`DataFormatError`]: a file is empty or has a malformed line (the message names the file and line).
    """
    root = _as_path(path)
    expects = "u.data and u.item"
    ratings_path = _require_file(root, _ML100K_RATINGS, "tab-separated ratings", expects)
    items_path = _require_file(root, _ML100K_ITEMS, "'|'-separated movies", expects)

    ratings, _ = _read_table(ratings_path, _ML100K_RATINGS)
    table, linenos = _read_table(items_path, _ML100K_ITEMS)
    _first_duplicate(items_path, table["item_id"], linenos, _ML100K_ITEMS)
    flags = table[list(MOVIELENS_100K_GENRES)].to_numpy(dtype=bool)
    names = np.array(MOVIELENS_100K_GENRES, dtype=object)
    items = pd.DataFrame(
        {
            "item_id": table["item_id"].astype(str),
            "title": table["title"].str.strip(),
            "genres": ["|".join(names[row]) for row in flags],
        }
    )
    interactions = _interactions(ratings)
    return _rec_data("movielens-100k", interactions, items, 3.0, "movie")


# ---------------------------------------------------------------------------------------------------------------------
# MovieLens-1M

_ML1M_RATING_COLUMNS = _ML100K_RATING_COLUMNS
_ML1M_RATINGS = _Format(
    spec="movielens-1m",
    filename="ratings.dat",
    encoding="latin-1",
    layout="UserID::MovieID::Rating::Timestamp (integers, Timestamp in unix seconds)",
    example="1::1193::5::978300760",
    columns=_ML1M_RATING_COLUMNS,
    split=lambda line: line.split("::"),
    # "::" is two characters, which only pandas' slow python engine accepts as a separator: turn it into a tab.
    bulk=_bulk_csv("\t", _ML1M_RATING_COLUMNS, quoting=csv.QUOTE_NONE, replace=("::", "\t")),
)
_ML1M_ITEMS = _Format(
    spec="movielens-1m",
    filename="movies.dat",
    encoding="latin-1",
    layout="MovieID::Title::Genres (Genres '|'-separated)",
    example="1::Toy Story (1995)::Animation|Children's|Comedy",
    columns=(("item_id", "int"), ("title", "str"), ("genres", "str")),
    split=lambda line: line.split("::"),
)


def load_movielens_1m(path: str | Path) -> RecData:
    """
    Load MovieLens-1M from the directory of the `ml-1m.zip` archive.

    Reads `ratings.dat` (`UserID::MovieID::Rating::Timestamp`) and `movies.dat` (`MovieID::Title::Genres`, genres
    `|`-separated), both latin-1.

    Args:
        path (`str` or `Path`):
            Directory with `ratings.dat` and `movies.dat`.

    Returns:
        [`RecData`]: `name="movielens-1m"`, `like_threshold=3`, `item_kind="movie"`.

    Raises:
        `FileNotFoundError`: the directory or one of the two files is missing.
        [`DataFormatError`]: a file is empty or has a malformed line (the message names the file and line).
    """
    root = _as_path(path)
    expects = "ratings.dat and movies.dat"
    ratings_path = _require_file(root, _ML1M_RATINGS, "'::'-separated ratings", expects)
    items_path = _require_file(root, _ML1M_ITEMS, "'::'-separated movies", expects)

    ratings, _ = _read_table(ratings_path, _ML1M_RATINGS)
    table, linenos = _read_table(items_path, _ML1M_ITEMS)
    _first_duplicate(items_path, table["item_id"], linenos, _ML1M_ITEMS)
    items = pd.DataFrame(
        {
            "item_id": table["item_id"].astype(str),
            "title": table["title"].str.strip(),
            "genres": table["genres"].str.strip(),
        }
    )
    interactions = _interactions(ratings)
    return _rec_data("movielens-1m", interactions, items, 3.0, "movie")


# ---------------------------------------------------------------------------------------------------------------------
# MovieLens latest-small

_LATEST_RATING_COLUMNS = _ML100K_RATING_COLUMNS
_LATEST_RATINGS = _Format(
    spec="movielens-latest-small",
    filename="ratings.csv",
    encoding="utf-8-sig",
    layout="userId,movieId,rating,timestamp (rating in half stars, timestamp in unix seconds)",
    example="1,1,4.0,964982703",
    columns=_LATEST_RATING_COLUMNS,
    split=_split_csv,
    header="userId,movieId,rating,timestamp",
    bulk=_bulk_csv(",", _LATEST_RATING_COLUMNS),
)
_LATEST_ITEMS = _Format(
    spec="movielens-latest-small",
    filename="movies.csv",
    encoding="utf-8-sig",
    layout='movieId,title,genres (CSV: a title with a comma is quoted; genres "|"-separated)',
    example='11,"American President, The (1995)",Comedy|Drama|Romance',
    columns=(("item_id", "int"), ("title", "str"), ("genres", "str")),
    split=_split_csv,
    header="movieId,title,genres",
)
_NO_GENRES = "(no genres listed)"


def load_movielens_latest_small(path: str | Path) -> RecData:
    """
    Load MovieLens latest-small from the directory of the `ml-latest-small.zip` archive.

    Reads `ratings.csv` (`userId,movieId,rating,timestamp`, ratings in half stars such as 3.5) and `movies.csv`
    (`movieId,title,genres`, quoted CSV), both UTF-8 with a header line. Genres `"(no genres listed)"` become `""`.
    The same layout fits the full `ml-latest` and `ml-32m` archives.

    Args:
        path (`str` or `Path`):
            Directory with `ratings.csv` and `movies.csv`.

    Returns:
        [`RecData`]: `name="movielens-latest-small"`, `like_threshold=3`, `item_kind="movie"`.

    Raises:
        `FileNotFoundError`: the directory or one of the two files is missing.
        [`DataFormatError`]: a file is empty, is not UTF-8, has the wrong header or a malformed line.
    """
    root = _as_path(path)
    spec = "movielens-latest-small"
    expects = "ratings.csv and movies.csv"
    ratings_path = _require_file(root, _LATEST_RATINGS, "CSV ratings with a header", expects)
    items_path = _require_file(root, _LATEST_ITEMS, "CSV movies with a header", expects)

    ratings, _ = _read_table(ratings_path, _LATEST_RATINGS)
    table, linenos = _read_table(items_path, _LATEST_ITEMS)
    _first_duplicate(items_path, table["item_id"], linenos, _LATEST_ITEMS)
    genres = table["genres"].str.strip()
    items = pd.DataFrame(
        {
            "item_id": table["item_id"].astype(str),
            "title": table["title"].str.strip(),
            "genres": genres.where(genres != _NO_GENRES, ""),
        }
    )
    interactions = _interactions(ratings)
    return _rec_data(spec, interactions, items, 3.0, "movie")


# ---------------------------------------------------------------------------------------------------------------------
# BookCrossing

_BX_RATING_COLUMNS = (("user_id", "int"), ("item_id", "str"), ("rating", "int"))
_BX_RATINGS = _Format(
    spec="bookcrossing",
    filename="BX-Book-Ratings.csv",
    encoding="latin-1",
    layout='"User-ID";"ISBN";"Book-Rating" (every field quoted; User-ID an integer, Book-Rating 0-10)',
    example='"276726";"0155061224";"5"',
    columns=_BX_RATING_COLUMNS,
    split=_split_bookcrossing,
    header='"User-ID";"ISBN";"Book-Rating"',
    bulk=_bulk_csv(";", _BX_RATING_COLUMNS),
)
_BX_BOOK_HEADER = (
    "ISBN",
    "Book-Title",
    "Book-Author",
    "Year-Of-Publication",
    "Publisher",
    "Image-URL-S",
    "Image-URL-M",
    "Image-URL-L",
)
_BX_BOOKS = _Format(
    spec="bookcrossing",
    filename="BX-Books.csv",
    encoding="latin-1",
    layout="8 ';'-separated fields, every one quoted, as in the header",
    example='"0195153448";"Classical Mythology";"Mark P. O. Morford";"2002";"Oxford University Press";'
    '"http://images.amazon.com/images/P/0195153448.01.THUMBZZZ.jpg";...',
    columns=tuple((name, "str") for name in _BX_BOOK_HEADER),
    split=_split_bookcrossing,
    header=";".join(f'"{name}"' for name in _BX_BOOK_HEADER),
)


def load_bookcrossing(path: str | Path) -> RecData:
    """
    Load the Book-Crossing data set (Ziegler et al., 2005) from the directory of `BX-CSV-Dump.zip`.

    Reads `BX-Book-Ratings.csv` (`"User-ID";"ISBN";"Book-Rating"`) and `BX-Books.csv` (`"ISBN";"Book-Title";
    "Book-Author";...`), `;`-separated with every field quoted, latin-1. Fields may contain `;` (HTML entities such as
    `&amp;`, which are unescaped in titles and authors), and the few lines of `BX-Books.csv` where the dump broke the
    quoting (`...Readers)\\";Michael Teitelbaum";"2000"`) are repaired into title and author.

    Format decisions:
        - Rating 0 is BookCrossing's *implicit* interaction (the user handled the book, no rating): dropped. Explicit
          ratings are 1-10 and a like is a rating above 5.
        - The author is stored in `genres` (books have no genres in this data set), so the prompts can name it.
        - BookCrossing has no timestamps. `timestamp` is the rating's position among the records of
          `BX-Book-Ratings.csv` (0-based, implicit ratings counted before they are dropped): deterministic, unique,
          and order-preserving, so "by time" means "in file order". The file is grouped by user, so a temporal split
          of BookCrossing is a split by user, not by time.
        - ISBNs are kept as written, surrounding spaces trimmed (the ratings file has some malformed ones); ratings
          whose ISBN is not in `BX-Books.csv` are dropped.

    Args:
        path (`str` or `Path`):
            Directory with `BX-Book-Ratings.csv` and `BX-Books.csv` (`BX-Users.csv` is not needed).

    Returns:
        [`RecData`]: `name="bookcrossing"`, `like_threshold=5`, `item_kind="book"`.

    Raises:
        `FileNotFoundError`: the directory or one of the two files is missing.
        [`DataFormatError`]: a file is empty, has the wrong header or a malformed line.
    """
    root = _as_path(path)
    expects = "BX-Book-Ratings.csv and BX-Books.csv"
    ratings_path = _require_file(root, _BX_RATINGS, "quoted ';'-separated ratings", expects)
    books_path = _require_file(root, _BX_BOOKS, "quoted ';'-separated books", expects)

    ratings, _ = _read_table(ratings_path, _BX_RATINGS)
    ratings["timestamp"] = np.arange(len(ratings), dtype="int64")
    ratings = ratings[ratings["rating"] != 0]
    table, linenos = _read_table(books_path, _BX_BOOKS)
    isbn = table["ISBN"].str.strip()
    _first_duplicate(books_path, isbn, linenos, _BX_BOOKS)
    items = pd.DataFrame(
        {
            "item_id": isbn,
            "title": [html.unescape(title).strip() for title in table["Book-Title"]],
            "genres": [html.unescape(author).strip() for author in table["Book-Author"]],
        }
    )
    interactions = _interactions(ratings.assign(item_id=ratings["item_id"].str.strip()))
    return _rec_data("bookcrossing", interactions, items, 5.0, "book")


# ---------------------------------------------------------------------------------------------------------------------
# TALLRec instruction JSON

_TALLREC_SPLITS = ("train", "valid", "test")
_TALLREC_COLUMNS = {
    "sample_id": "string",
    "user_id": "string",
    "item_id": "string",
    "timestamp": "int64",
    "prompt": "string",
    "completion": "string",
    "label": "int64",
}
_TALLREC_OUTPUTS = {"Yes.": 1, "No.": 0}
_TALLREC_TARGET = re.compile(r"Whether the user will like the target (?:movie|book) (?P<target>.+?)\?\s*\Z")
_TALLREC_WRITTEN_BY = re.compile(r'"(?P<title>.*)" ?written by ?(?P<author>.*)')
_TALLREC_EXPECTED = (
    'a JSON list of {"instruction": ..., "input": ..., "output": "Yes." or "No."} objects, the input ending with '
    "'Whether the user will like the target movie \"X\"?' (or book) (tallrec)"
)


def load_tallrec_json(path: str | Path, prompt_template: str = TALLREC_PROMPT_TEMPLATE):
    """
    Load TALLRec's instruction-tuning files (Bao et al., 2023) as prompt/completion pairs.

    A TALLRec file is a JSON list of `{"instruction", "input", "output"}` objects whose output is `"Yes."` or `"No."`
    and whose input ends with `Whether the user will like the target movie "X"?` (books: `... target book
    ""X" written by A"?` or `"X" written by A?`).

    Columns of every split:
        - `sample_id` (`str`): `"{split}-{index}"`, index 0-based in the file; stable across loads.
        - `user_id` (`str`): TALLRec files carry no user id, so every sample gets its own pseudo user
          `"anon-{split}-{index}"`. Forgetting by user is therefore forgetting by sample on this data.
        - `item_id` (`str`): the target title parsed from the input (for books, the title without the author).
        - `timestamp` (`int`): the index in the file (TALLRec writes a user's samples in time order).
        - `prompt` (`str`): `prompt_template.format(instruction=..., input=...)`; by default
          `"### Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n### Response:\\n"`. Pass
          [`TALLREC_ALPACA_PROMPT_TEMPLATE`] to reproduce the authors' training prompt exactly (Alpaca preamble
          included), e.g. to score a checkpoint trained with their code.
        - `completion` (`str`): `"Yes."` or `"No."`, appended directly to `prompt` (which ends with a newline), as
          TALLRec's code does and as the library's `"tallrec"` prompt template does for prompts built from a
          [`RecData`], so both sources tokenize the answer the same way.
        - `label` (`int`): 1 for `"Yes."`, 0 for `"No."`.

    Args:
        path (`str` or `Path`):
            A single JSON file (loaded as the split `"train"`), or a directory holding any of `train.json`,
            `valid.json` and `test.json` (each loaded as the split of that name).
        prompt_template (`str`, *optional*, defaults to [`TALLREC_PROMPT_TEMPLATE`]):
            A `str.format` template with the fields `{instruction}` and `{input}`.

    Returns:
        `datasets.DatasetDict`: one `Dataset` per split found, in the order train, valid, test.

    Raises:
        `FileNotFoundError`: the path does not exist, or the directory has none of the three files.
        [`DataFormatError`]: a file is empty, is not valid JSON (with the line), or a sample does not have the format
            above (with the sample's index and line).
    """
    from datasets import Dataset, DatasetDict, Features, Value

    try:
        prompt_template.format(instruction="", input="")
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise ValueError(
            f"`prompt_template` must be a str.format template with the fields {{instruction}} and {{input}} only, got "
            f"{prompt_template!r} ({type(err).__name__}: {err}). Double any literal brace: '{{{{' and '}}}}'."
        ) from None

    root = _as_path(path)
    expects = "train.json, valid.json and/or test.json"
    if not root.exists():
        raise FileNotFoundError(
            f"tallrec:{root} expects a TALLRec JSON file or a directory with {expects}, but {root} does not exist."
        )
    if root.is_dir():
        files = {split: root / f"{split}.json" for split in _TALLREC_SPLITS if (root / f"{split}.json").is_file()}
        if not files:
            raise FileNotFoundError(
                f"tallrec:{root} expects a directory with {expects} (TALLRec's data/movie or data/book), but none of "
                f"them exists in {root}."
            )
    else:
        files = {"train": root}

    features = Features({name: Value(dtype) for name, dtype in _TALLREC_COLUMNS.items()})
    splits = {}
    for split, file in files.items():
        rows = _read_tallrec_file(file, split, prompt_template)
        splits[split] = Dataset.from_dict(rows, features=features)
    return DatasetDict(splits)


def _read_tallrec_file(path: Path, split: str, prompt_template: str) -> dict[str, list]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        raise DataFormatError(
            f"{path}, line {lineno}: bytes that are not valid UTF-8 ({err.reason} at byte {err.start}). "
            f"Expected {_TALLREC_EXPECTED}, in UTF-8."
        ) from None
    if not text.strip():
        raise DataFormatError(f"{path} is empty. Expected {_TALLREC_EXPECTED}.")
    try:
        samples = json.loads(text)
    except json.JSONDecodeError as err:
        lines = text.split("\n")
        line = lines[err.lineno - 1] if err.lineno <= len(lines) else ""
        raise DataFormatError(
            f"{path}, line {err.lineno}: not valid JSON ({err.msg}, column {err.colno}).\n  line {err.lineno}: "
            f"{_shown(line)}\n  expected: {_TALLREC_EXPECTED}"
        ) from None
    if not isinstance(samples, list):
        raise DataFormatError(
            f"{path}: the top level is a JSON {type(samples).__name__}, not a list. Expected {_TALLREC_EXPECTED}."
        )
    if not samples:
        raise DataFormatError(f"{path} holds an empty list: no samples. Expected {_TALLREC_EXPECTED}.")

    rows: dict[str, list] = {name: [] for name in _TALLREC_COLUMNS}
    for index, sample in enumerate(samples):
        problem = _tallrec_problem(sample)
        if problem is None:
            output = sample["output"].strip()
            target = _TALLREC_TARGET.search(sample["input"])
            item = _tallrec_title(target.group("target"))
            if not item:
                problem = "the target title is empty"
        if problem is not None:
            lineno = _json_element_lines(text)[index]
            raise DataFormatError(
                f"{path}, sample {index} (line {lineno}): {problem}.\n  sample {index}: "
                f"{_shown(json.dumps(sample, ensure_ascii=False))}\n  expected: {_TALLREC_EXPECTED}"
            )
        rows["sample_id"].append(f"{split}-{index}")
        rows["user_id"].append(f"anon-{split}-{index}")
        rows["item_id"].append(item)
        rows["timestamp"].append(index)
        rows["prompt"].append(prompt_template.format(instruction=sample["instruction"], input=sample["input"]))
        rows["completion"].append(output)
        rows["label"].append(_TALLREC_OUTPUTS[output])
    return rows


def _tallrec_problem(sample) -> str | None:
    if not isinstance(sample, dict):
        return f"a sample is a JSON {type(sample).__name__}, not an object"
    for key in ("instruction", "input", "output"):
        if key not in sample:
            return f"the key {key!r} is missing"
        if not isinstance(sample[key], str):
            return f"{key!r} is a JSON {type(sample[key]).__name__}, not a string"
    if sample["output"].strip() not in _TALLREC_OUTPUTS:
        return f"'output' is {sample['output']!r}, not 'Yes.' or 'No.'"
    if not _TALLREC_TARGET.search(sample["input"]):
        return "'input' does not end with 'Whether the user will like the target movie \"X\"?' (or book)"
    return None


def _tallrec_title(target: str) -> str:
    """`"X"` -> `X`; books: `""X" written by A"` or `"X" written by A` -> `X`."""
    target = target.strip()
    if len(target) >= 2 and target[0] == '"' and target[-1] == '"':
        target = target[1:-1]
    match = _TALLREC_WRITTEN_BY.fullmatch(target)
    return (match.group("title") if match else target).strip()


def _json_element_lines(text: str) -> list[int]:
    """The 1-based line on which each element of a top-level JSON list starts (only run to report an error)."""
    decoder = json.JSONDecoder()
    whitespace = re.compile(r"\s*")
    position = whitespace.match(text).end() + 1  # after "["
    starts = []
    while True:
        position = whitespace.match(text, position).end()
        if position >= len(text) or text[position] == "]":
            break
        starts.append(text.count("\n", 0, position) + 1)
        _, position = decoder.raw_decode(text, position)
        position = whitespace.match(text, position).end()
        if position < len(text) and text[position] == ",":
            position += 1
    return starts
