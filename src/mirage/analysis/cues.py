"""Spurious-cue statistics of a VLGuard-schema file: which words predict "unsafe" by themselves.

An instruction is *unsafe* when it is asked about an unsafe image or is an ``unsafe_instruction``
(subsets ``unsafes`` and ``safe_unsafes``); *safe* when it is a ``safe_instruction`` on a safe image.
For each first word (or each n-gram anywhere in the instruction, counted once per instruction) the
table gives the safe and unsafe counts and P(unsafe | token) = unsafe / (safe + unsafe).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from mirage.data.readers import read_vlguard

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased words (apostrophes kept inside words: "i'm", "what's")."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


@dataclass
class CueRow:
    token: str
    safe: int
    unsafe: int

    @property
    def total(self) -> int:
        return self.safe + self.unsafe

    @property
    def p_unsafe(self) -> float:
        return self.unsafe / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "total": self.total, "p_unsafe": self.p_unsafe}


def labelled_instructions(path: str | Path) -> list[tuple[str, bool]]:
    """(instruction, is_unsafe) for every pair of a VLGuard-schema file (images need not exist)."""
    return [(s.question, s.meta["subset"] != "safe_safes") for s in read_vlguard(path, check_images=False)]


def cue_table(
    instructions: list[tuple[str, bool]], n: int = 1, first_only: bool = True, min_count: int = 1
) -> list[CueRow]:
    """Rows sorted by total count (then token); ``first_only`` keeps the instruction's first n-gram."""
    safe: Counter[str] = Counter()
    unsafe: Counter[str] = Counter()
    for text, is_unsafe in instructions:
        if first_only:
            tokens = words(text)[:n]
            grams = {tuple(tokens)} if len(tokens) == n else set()
        else:
            grams = ngrams(text, n)
        for gram in grams:
            (unsafe if is_unsafe else safe)[" ".join(gram)] += 1
    rows = [CueRow(t, safe[t], unsafe[t]) for t in set(safe) | set(unsafe)]
    rows = [r for r in rows if r.total >= min_count]
    return sorted(rows, key=lambda r: (-r.total, r.token))


def markdown_table(rows: list[CueRow], title: str) -> str:
    lines = [f"| {title} | safe | unsafe | P(unsafe \\| token) |", "|---|---|---|---|"]
    lines += [f"| {r.token} | {r.safe} | {r.unsafe} | {r.p_unsafe:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def write_cues(
    path: str | Path, out_dir: str | Path, max_n: int = 2, top: int = 20, min_count: int = 5
) -> dict[str, list[CueRow]]:
    """Tables (``cues.md``, ``cues.json``, ``first_words.csv``) and ``first_words.png`` for one file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = labelled_instructions(path)
    tables = {"first word": cue_table(data, 1, first_only=True)}
    for n in range(1, max_n + 1):
        tables[f"{n}-gram"] = cue_table(data, n, first_only=False, min_count=min_count)
    n_unsafe = sum(u for _, u in data)
    text = [
        f"# Spurious cues in {path}\n",
        f"{len(data)} instructions: {len(data) - n_unsafe} safe, {n_unsafe} unsafe.\n",
    ]
    for name, rows in tables.items():
        shown = rows if name == "first word" else sorted(rows, key=lambda r: (-r.p_unsafe, -r.total))[:top]
        text.append(f"\n## {name}\n\n" + markdown_table(shown[: max(top, 1)], name))
    (out_dir / "cues.md").write_text("".join(text))
    (out_dir / "cues.json").write_text(
        json.dumps({name: [r.to_dict() for r in rows] for name, rows in tables.items()}, indent=1)
    )
    with open(out_dir / "first_words.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["first_word", "safe", "unsafe", "p_unsafe"])
        writer.writerows([r.token, r.safe, r.unsafe, f"{r.p_unsafe:.4f}"] for r in tables["first word"])
    _plot(tables["first word"][:top], out_dir / "first_words.png", str(path))
    return tables


def _plot(rows: list[CueRow], out: Path, source: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rows) + 2), 3.5))
    ax.bar([r.token for r in rows], [r.p_unsafe for r in rows], color="tab:red")
    for i, row in enumerate(rows):
        ax.text(i, row.p_unsafe + 0.02, str(row.total), ha="center", fontsize=7)
    ax.set(ylabel="P(unsafe | first word)", ylim=(0, 1.12), title=f"first words of {Path(source).name}")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
