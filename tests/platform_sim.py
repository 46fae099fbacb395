"""A stand-in for the platform, written from formats.md section 3 (not from our code): it applies
onboarding files to its audiences and writes the segment dump it would share back.

- ``.sync``: each trait of a line is applied to the user: ``d_sid=N`` adds segment N, ``d_unsid=N``
  removes it, a key-value trait is added as is.
- ``.overwrite``: each listed user's traits for the data source become exactly the line's traits
  (``d_unsid`` is ignored there); users not listed keep theirs.
"""
from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq


def output_text(folder: Path) -> str:
    """Every file under ``folder`` as text, to search for what must not be there: gzip
    decompressed, Parquet read back row by row, anything else as is."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            out.append(json.dumps(pq.read_table(path).to_pylist()))
        elif path.suffix == ".gz":
            out.append(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
        else:
            out.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


class Platform:
    def __init__(self):
        self.traits: dict[str, set[str]] = defaultdict(set)  # one data source: user ID -> traits

    def apply(self, export_out: Path) -> None:
        """Apply one export run's data files, in sequence order (as listed in its control file)."""
        onboarding = export_out / "onboarding"
        infos = list(onboarding.glob("*.info"))
        if not infos:
            return  # nothing was sent
        for entry in json.loads(infos[0].read_text())["Files"]:
            name = entry["FileName"]
            overwrite = ".overwrite" in name
            seen: dict[str, list[str]] = defaultdict(list)
            for line in gzip.decompress((onboarding / name).read_bytes()).decode("utf-8").splitlines():
                user, _, traits = line.partition("\t")
                seen[user] += [t for t in traits.split(",") if t]
            for user, traits in seen.items():
                if overwrite:
                    self.traits[user] = {t for t in traits if not t.startswith("d_unsid=")}
                    continue
                for t in traits:
                    if t.startswith("d_unsid="):
                        self.traits[user].discard("d_sid=" + t.removeprefix("d_unsid="))
                    else:
                        self.traits[user].add(t)

    def members(self, trait: str) -> set[str]:
        return {user for user, traits in self.traits.items() if trait in traits}

    def state(self) -> dict[str, frozenset]:
        return {user: frozenset(traits) for user, traits in self.traits.items() if traits}

    def write_dump(self, folder: Path, dpid: int, timestamp_ms: int) -> Path:
        """The platform's full outbound dump: ``<ID> <SEG1,SEG2,...>`` for every user in a segment."""
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for user, traits in sorted(self.traits.items()):
            segments = sorted(t.removeprefix("d_sid=") for t in traits if t.startswith("d_sid="))
            if segments:
                lines.append(f"{user} {','.join(segments)}\n")
        path = folder / f"ftp_1234_{dpid}_full_{timestamp_ms}.sync"
        path.write_text("".join(lines))
        return path
