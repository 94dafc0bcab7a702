"""Hugging Face hub ids resolved once, at setup, to local snapshots in the hub's cache.

Every stage then works on local paths: a model id becomes its snapshot directory (only the files a run
needs: `MODEL_FILES`), a dataset id becomes the data files of the config it uses. Online, the hub is asked
once per id (the snapshot is downloaded, or checked against the cache); offline (`HF_HUB_OFFLINE=1`), the
cache alone answers, and what it lacks is one line naming the id and the `hf download` command that puts
it there (run where the hub is reachable, e.g. a cluster's login node, with the same `HF_HOME`).
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Optional

from thinkswitch.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# What a run reads of a model repo: config and generation config, safetensors weights (never pickles),
# the tokenizer (tokenizer.json / vocab + merges / sentencepiece), the chat template.
MODEL_FILES = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken")
README = "README.md"
# Data files a dataset repo may hold, by extension: the `datasets` builder that reads them.
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv"}
DATA_FILES = tuple(f"*{ext}" for ext in BUILDERS)


def hf_command(repo: str, revision: Optional[str], patterns: tuple[str, ...] = (), dataset: bool = False) -> str:
    """The `hf download` command that puts `repo` (only `patterns`) in the hub cache."""
    parts = ["hf", "download", repo, *(["--repo-type", "dataset"] if dataset else []),
             *(["--revision", revision] if revision else [])]
    if patterns:
        parts += ["--include", *patterns]
    return " ".join(shlex.quote(p) for p in parts)


def snapshot(repo: str, revision: Optional[str], patterns: tuple[str, ...], key: str, dataset: bool = False,
             what: Optional[str] = None, advice: Optional[tuple[str, ...]] = None) -> Path:
    """The local snapshot of `repo` at `revision` holding `patterns` (downloaded if online and missing); `what`
    names it in errors, `advice`: the patterns the `hf download` command in an error names (default `patterns`)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = (what or f"{'dataset' if dataset else 'model'} {repo}") + (f" (revision {revision})" if revision else "")
    error = DataError if dataset else ConfigError
    try:
        path = snapshot_download(repo, revision=revision, repo_type="dataset" if dataset else "model",
                                 allow_patterns=list(patterns))
    except (LocalEntryNotFoundError, IncompleteSnapshotError):
        raise not_cached(key, what, hf_command(repo, revision, patterns if advice is None else advice, dataset),
                         error) from None
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as e:
        raise error(f"{key}: {what}: {type(e).__name__} ({' '.join(str(e).split())[:200]})") from None
    log.debug("%s: %s -> %s", key, what, path)
    return Path(path)


def not_cached(key: str, what: str, command: str, error: type = ConfigError) -> Exception:
    """The one line for what the hub cache lacks: what, where the cache is, and the command that fills it."""
    from huggingface_hub import constants

    where = "the hub is offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
    return error(f"{key}: {what} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {where}; download "
                 f"it once where the hub is reachable (e.g. a login node, same HF_HOME): {command}")


def resolve_model(ref: str, revision: Optional[str], key: str) -> str:
    """A hub model's local snapshot directory, holding the files a run needs."""
    path = str(snapshot(ref, revision, MODEL_FILES, key))
    if not (Path(path) / "config.json").is_file() or not any(Path(path).glob("*.safetensors")):
        # offline, the hub's cache cannot tell a partial snapshot (no listing of the repo was kept): said here
        raise not_cached(key, f"model {ref} (its config.json and *.safetensors weights)",
                         hf_command(ref, revision, MODEL_FILES))
    log.info("%s: %s%s -> %s (the hub cache)", key, ref, f" at {revision}" if revision else "", path)
    return path


def dataset_files(repo: str, config: Optional[str], split: str, revision: Optional[str],
                  key: str) -> tuple[str, list[str]]:
    """(the `datasets` builder, the local data files) of one split of a hub dataset, from its snapshot.

    The dataset card's `configs` (its YAML header, as the hub reads it) say which files hold a config's split;
    only those are downloaded. Without `configs`, the files are found as the hub finds them (`data/train-*`, ...).
    """
    from datasets.data_files import DataFilesList, get_data_patterns

    what = f"dataset {repo!r} (config {config!r}, split {split!r})"
    where = f"{key}: {what}"
    # its card first (the whole repo is what an error suggests: which files hold the split is not known yet)
    card = snapshot(repo, revision, (README,), key, dataset=True, what=what, advice=()) / README
    patterns = _config_patterns(card, config, split, where)
    root = snapshot(repo, revision, (README, *(patterns or DATA_FILES)), key, dataset=True, what=what)
    try:
        if patterns is None:
            patterns = get_data_patterns(str(root)).get(split)
        files = sorted(DataFilesList.from_patterns(patterns or [], base_path=str(root))) if patterns else []
    except FileNotFoundError:
        files = []
    if not files and patterns:  # a partial snapshot (offline, the cache cannot tell)
        raise not_cached(key, what, hf_command(repo, revision, (README, *patterns), dataset=True), DataError)
    builders = {BUILDERS.get(Path(f).suffix.lower()) for f in files}
    if not files or None in builders or len(builders) > 1:
        raise DataError(f"{where}: expected data files of one kind ({', '.join(BUILDERS)}) for {patterns} in "
                        f"{root}, found {[Path(f).name for f in files] or 'none'}")
    log.info("%s: %s -> %d file(s) in %s (the hub cache)", key, what, len(files), root)
    return builders.pop(), files


def _config_patterns(card: Path, config: Optional[str], split: str, where: str) -> Optional[list[str]]:
    """The data file patterns of `config`'s `split` in a dataset card's `configs`; None when it has none."""
    from huggingface_hub import DatasetCard

    configs = DatasetCard.load(card).data.to_dict().get("configs") if card.is_file() else None
    if not configs:
        if config not in (None, "default"):
            raise DataError(f"{where}: the dataset card declares no configs (set the config to null)")
        return None
    names = [c.get("config_name", "default") for c in configs]
    chosen = next((c for c in configs if c.get("config_name", "default") == (config or "default")), None)
    if chosen is None:
        raise DataError(f"{where}: no config {config!r}; the dataset has {names}")
    data = chosen.get("data_files", [])
    data = [{"split": "train", "path": data}] if isinstance(data, (str, list)) and not _split_list(data) else data
    paths = [d["path"] for d in data if d.get("split", "train") == split]
    if not paths:
        raise DataError(f"{where}: config {config!r} has no split {split!r}; it has "
                        f"{sorted({d.get('split', 'train') for d in data})}")
    return [p for group in paths for p in ([group] if isinstance(group, str) else group)]


def _split_list(data) -> bool:
    return isinstance(data, list) and all(isinstance(d, dict) for d in data)

