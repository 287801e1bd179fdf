"""Where a photo goes once it has a result: done, failed (with the reason beside it), relabel.

A photo leaves the drop folder only after its result is in the outbox, so a crash at any point
means at worst one more inspection of the same photo (same result_id), never a lost result.
Names are never overwritten: a camera whose counter wrapped gets ``<stem>-<result_id[:8]>``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path


def _free_name(folder: Path, name: str, rid: str) -> Path:
    target = folder / name
    if not target.exists():
        return target
    p = Path(name)
    return folder / f"{p.stem}-{rid[:8]}{p.suffix}"


@dataclass(frozen=True)
class Folders:
    done: Path
    failed: Path
    relabel: Path | None

    def to_done(self, photo: Path, rid: str) -> Path:
        target = _free_name(self.done, photo.name, rid)
        shutil.move(photo, target)
        return target

    def to_failed(self, photo: Path, rid: str, reason: str) -> Path:
        """The photo and ``<photo>.reason.txt``: what the model said, for the person who looks."""
        target = _free_name(self.failed, photo.name, rid)
        target.with_name(target.name + ".reason.txt").write_text(f"{reason}\nresult_id: {rid}\n")
        shutil.move(photo, target)
        return target

    def copy_for_relabel(self, photo: Path, rid: str, why: str, answer: dict, shadow: dict | None = None) -> Path:
        """A copy of the photo and ``<photo>.json`` with the model's answer, to label and train on.

        ``shadow``: the shadow model's answer on a photo where the two verdicts differ, kept beside
        the stable one (``shadow_answer``). A photo the line already copied (uncertain) is not
        copied twice: its sidecar gains the shadow's answer and reason."""
        assert self.relabel is not None
        target = self.relabel / photo.name
        sidecar_path = target.with_name(target.name + ".json")
        try:
            earlier = json.loads(sidecar_path.read_text())
        except (OSError, ValueError):
            earlier = None
        if shadow is not None and isinstance(earlier, dict) and earlier.get("result_id") == rid:
            earlier.update(why=f"{earlier.get('why')}; {why}", shadow_answer=shadow)
            sidecar_path.write_text(json.dumps(earlier, indent=1) + "\n")
            return target
        target = _free_name(self.relabel, photo.name, rid)
        shutil.copy2(photo, target)
        sidecar = {"image": photo.name, "result_id": rid, "why": why, "answer": answer}
        if shadow is not None:
            sidecar["shadow_answer"] = shadow
        target.with_name(target.name + ".json").write_text(json.dumps(sidecar, indent=1) + "\n")
        return target
