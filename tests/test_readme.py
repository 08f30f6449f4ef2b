"""The README's Python quickstart runs as written: train, forget (E2URec and APA), push, reload by revision."""

import re
import uuid
from pathlib import Path

from huggingface_hub import HfApi

from hf_recunlearn import hub


README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart() -> str:
    """The first ```python block of the README's "Python quickstart" section."""
    section = README.read_text().split("## Python quickstart", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quickstart_runs_against_the_hub(hub_server, capsys):
    namespace = f"readme-{uuid.uuid4().hex[:8]}"
    code = quickstart().replace("your-name/", f"{namespace}/")  # the README's one placeholder
    assert f"{namespace}/rec-apa" in code and "your-name" not in code
    exec(compile(code, str(README), "exec"), {"__name__": "readme_quickstart"})

    out = capsys.readouterr().out
    assert out.count("'auc':") == 3  # the recommender, the APA version reloaded from v2, the E2URec adapter from v1
    assert f"/{namespace}/rec-e2urec/commit/" in out  # push_to_hub returned the version's CommitInfo (its URL)
    apa = [(v.tag, v.status, v.event, v.users_removed) for v in hub.list_versions(f"{namespace}/rec-apa")]
    assert apa == [("v1", "purged", "train", 0), ("v2", "available", "forget", 1)]
    e2urec = [(v.tag, v.status, v.event, v.users_removed) for v in hub.list_versions(f"{namespace}/rec-e2urec")]
    assert e2urec == [("v1", "available", "unlearn", 1)]
    assert [t.name for t in HfApi().list_repo_refs(f"{namespace}/rec-apa").tags] == ["v2"]
