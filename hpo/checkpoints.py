"""Where a trial's checkpoint lies, and removing a deleted study's. No torch here: `hpo delete`
uses it too (the checkpoints themselves are written and read by hpo.trainer)."""

from __future__ import annotations

from pathlib import Path


def checkpoint_path(checkpoint_dir: Path, study: str, number: int, key: str = "") -> Path:
    """--checkpoint-dir/STUDY/trial-N-KEY.pt: KEY (Storage.checkpoint_key) tells this study from
    another of its name."""
    return Path(checkpoint_dir) / study / (f"trial-{number}-{key}.pt" if key else f"trial-{number}.pt")


def remove_checkpoints(checkpoint_dir: Path, study: str, key: str) -> int:
    """Remove the checkpoints of the study that `key` names (deleted: none will be resumed), then
    the study's folder and `checkpoint_dir` once empty; how many files went."""
    folder = Path(checkpoint_dir) / study
    removed = 0
    for path in folder.glob(f"trial-*-{key}.pt"):
        path.unlink(missing_ok=True)
        removed += 1
    for empty in (folder, Path(checkpoint_dir)):
        try:
            empty.rmdir()
        except OSError:
            break
    return removed
