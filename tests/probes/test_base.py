"""What every probe shares: where the forget split of an audited model's data is."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirage.probes.base import AuditTarget, forget_split


def test_the_forget_split_is_the_given_file_else_the_last_data_root():
    target = AuditTarget("npo", Path("/m/hf"), Path("/w"), train_overrides=("data.root=/a", "++data.root=/b"))
    assert forget_split(target, None, "gcg", "corpus_file") == Path("/b/forget.json")  # the last wins
    assert forget_split(target, "/mine.json", "gcg", "corpus_file") == Path("/mine.json")
    bare = AuditTarget("npo", Path("/m/hf"), Path("/w"), train_overrides=("experiment=npo_tiny",))
    with pytest.raises(
        ValueError, match=r"probe visual_pgd: model 'npo': no targets_file.*probes.visual_pgd"
    ):
        forget_split(bare, None, "visual_pgd", "targets_file")
