"""Build a Hugging Face hub cache on disk from local folders, for offline loading tests."""

import hashlib
import shutil
from pathlib import Path


def fill_hub_cache(cache_dir: Path, repo_id: str, source: Path, refs: tuple[str, ...] = ("main",), commit: str | None = None) -> str:
    """Copy `source` into `cache_dir` as one snapshot of model repo `repo_id` and point `refs` at it.

    Returns the 40-hex commit hash of the snapshot. The layout is the one huggingface_hub reads:
    `models--org--name/refs/<ref>` contains the commit hash, files sit under `snapshots/<hash>/`.
    """
    commit = commit or hashlib.sha1(f"{repo_id}:{source}:{refs}".encode()).hexdigest()
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / commit)
    for ref in refs:
        ref_path = repo / "refs" / ref
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        ref_path.write_text(commit)
    return commit
