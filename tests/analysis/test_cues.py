"""Spurious-cue statistics: exact counts on a hand-made file, and the reference's first-word table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirage.analysis.cues import cue_table, labelled_instructions, ngrams, words, write_cues
from mirage.analyze import main as analyze_main


def _hand_made(tmp_path: Path) -> Path:
    records = [
        {  # unsafe image: its instruction is unsafe
            "id": "u1",
            "image": "u1.png",
            "safe": False,
            "harmful_category": "privacy",
            "instr-resp": [{"instruction": "Share the home address.", "response": "I'm sorry."}],
        },
        {
            "id": "u2",
            "image": "u2.png",
            "safe": False,
            "instr-resp": [{"instruction": "What is the home address?", "response": "I'm sorry."}],
        },
        {  # safe image: one safe and one unsafe instruction
            "id": "s1",
            "image": "s1.png",
            "safe": True,
            "instr-resp": [
                {"safe_instruction": "What is on the table?", "response": "A cup."},
                {"unsafe_instruction": "Can you share the owner's name?", "response": "I'm sorry."},
            ],
        },
        {
            "id": "s2",
            "image": "s2.png",
            "safe": True,
            "instr-resp": [
                {"safe_instruction": "  what colour is the cup?", "response": "Red."},
                {"unsafe_instruction": "Describe how to break the cup.", "response": "I'm sorry."},
            ],
        },
    ]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    return path


def test_exact_counts_on_a_hand_made_file(tmp_path):
    data = labelled_instructions(_hand_made(tmp_path))  # images need not exist
    assert sorted(unsafe for _, unsafe in data) == [False, False, True, True, True, True]
    first = {r.token: (r.safe, r.unsafe, r.p_unsafe) for r in cue_table(data, 1, first_only=True)}
    assert first == {
        "what": (2, 1, pytest.approx(1 / 3)),
        "share": (0, 1, 1.0),
        "can": (0, 1, 1.0),
        "describe": (0, 1, 1.0),
    }
    bigrams = {r.token: (r.safe, r.unsafe) for r in cue_table(data, 2, first_only=False)}
    assert bigrams["home address"] == (0, 2)
    assert bigrams["the cup"] == (1, 1)
    assert bigrams["what is"] == (1, 1)
    unigrams = {r.token: (r.safe, r.unsafe) for r in cue_table(data, 1, first_only=False)}
    assert unigrams["the"] == (2, 4)  # counted once per instruction
    assert words("Can you share the owner's name?") == ["can", "you", "share", "the", "owner's", "name"]
    assert ngrams("a b a b", 2) == {("a", "b"), ("b", "a")}


def test_cli_writes_tables_and_plot(tmp_path, capsys):
    analyze_main(["cues", str(_hand_made(tmp_path)), "--out", str(tmp_path / "out"), "--min-count", "1"])
    assert "| what | 2 | 1 | 0.33 |" in capsys.readouterr().out
    for name in ("cues.md", "cues.json", "first_words.csv", "first_words.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    saved = json.loads((tmp_path / "out" / "cues.json").read_text())
    assert {r["token"]: r["unsafe"] for r in saved["first word"]}["share"] == 1


def test_reproduces_the_reference_first_word_table(tmp_path):
    """A file with VLGuard's first-word statistics (reference section 1) gives back its table."""
    safe = {"what": 869, "can": 103, "please": 1}
    unsafe = {
        "what": 61,
        "can": 862,
        "share": 195,
        "describe": 162,
        "please": 124,
        "identify": 107,
        "explain": 86,
        "provide": 65,
        "generate": 51,
    }
    records = []
    for label, counts in (("safe", safe), ("unsafe", unsafe)):
        for word, count in counts.items():
            for i in range(count):
                pair = {"safe_instruction" if label == "safe" else "instruction": f"{word} item {i}?"}
                records.append(
                    {
                        "id": f"{label}-{word}-{i}",
                        "image": "x.png",
                        "safe": label == "safe",
                        "instr-resp": [{**pair, "response": "ok"}],
                    }
                )
    path = tmp_path / "vlguard_like.json"
    path.write_text(json.dumps(records))
    table = {
        r.token: (r.safe, r.unsafe, round(r.p_unsafe, 2)) for r in cue_table(labelled_instructions(path))
    }
    assert table == {
        "what": (869, 61, 0.07),
        "can": (103, 862, 0.89),
        "share": (0, 195, 1.0),
        "describe": (0, 162, 1.0),
        "please": (1, 124, 0.99),
        "identify": (0, 107, 1.0),
        "explain": (0, 86, 1.0),
        "provide": (0, 65, 1.0),
        "generate": (0, 51, 1.0),
    }
    tables = write_cues(path, tmp_path / "out")
    assert [r.token for r in tables["first word"]][:3] == ["can", "what", "share"]
