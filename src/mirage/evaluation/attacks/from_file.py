"""Rewrites read from a file in VLGuard's schema (the released ``test_what_3shot.json``, ...).

Such a file holds K consecutive records per id, each with one rewritten question; the reader
numbers them as shots 0..K-1. For every input sample this attack emits the file's rewrites of
that sample's question, matched by ``id`` and subset, all shots in file order. The image and
reference answer stay the input's: only the question changes. Inputs with no rewrite in the
file are counted in ``stats`` and logged; when none match, the file is the wrong one and the
attack fails, naming it.

Note the subset a rewrite gets: the reader files a plain ``instruction`` on a safe image under
``safe_safes`` (the Share file's layout) and on an unsafe image under ``unsafes`` (the What file's).
Set ``match_subset=False`` to match on ``id`` alone (as happens for inputs with no subset).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from mirage.data.readers import VLGUARD_SUBSETS, read_vlguard
from mirage.data.records import DataError, Sample
from mirage.evaluation.attacks.base import Attack

log = logging.getLogger(__name__)


class FromFileAttack(Attack):
    """The rewrites a VLGuard-schema file holds for each input question."""

    def __init__(
        self,
        path: str | Path,
        image_root: str | Path | None = None,
        name: str | None = None,
        match_subset: bool = True,
    ) -> None:
        self.path = Path(path)
        self.image_root = image_root
        self.match_subset = match_subset
        self.name = name or self.path.stem
        self.stats: dict[str, int] = {}
        self._rewrites: dict[tuple[str, str | None], list[Sample]] | None = None

    def rewrites(self) -> dict[tuple[str, str | None], list[Sample]]:
        """The file's rewrites by (id, subset), or by (id, None) without subset matching; read once."""
        if self._rewrites is None:
            # Images are the inputs' own, so the file's image paths need not exist here.
            records = read_vlguard(
                self.path, self.image_root, VLGUARD_SUBSETS, check_images=False, kshot=True
            )
            if not records:
                raise DataError(self.path, "no rewrites in the file")
            table: dict[tuple[str, str | None], list[Sample]] = defaultdict(list)
            for record in records:
                table[self._key(record)].append(record)
            self._rewrites = dict(table)
        return self._rewrites

    def _key(self, sample: Sample) -> tuple[str, str | None]:
        return (str(sample.id), sample.meta.get("subset") if self.match_subset else None)

    def _find(self, table: dict[tuple[str, str | None], list[Sample]], sample: Sample) -> list[Sample]:
        if self.match_subset and "subset" not in sample.meta:
            # A sample from outside the VLGuard reader has no subset: take the id's rewrites in any subset.
            return [
                r for (record_id, _), found in table.items() if record_id == str(sample.id) for r in found
            ]
        return table.get(self._key(sample), [])

    def apply(self, samples: Iterable[Sample]) -> list[Sample]:
        samples = list(samples)
        table = self.rewrites()
        out: list[Sample] = []
        unmatched: list[tuple[str, str | None]] = []
        for sample in samples:
            found = self._find(table, sample)
            if not found:
                unmatched.append(self._key(sample))
                continue
            for rewrite in found:
                out.append(
                    self.variant(
                        sample,
                        question=rewrite.question,
                        shot=rewrite.meta["shot"],
                        rewrite_source=str(self.path),
                        rewrite_index=rewrite.meta["index"],
                    )
                )
        self.stats = {
            "inputs": len(samples),
            "matched": len(samples) - len(unmatched),
            "unmatched": len(unmatched),
            "emitted": len(out),
        }
        if samples and len(unmatched) == len(samples):
            in_file = sorted({subset for _, subset in table if subset is not None})
            raise DataError(
                self.path,
                f"none of the {len(samples)} input questions has a rewrite in this file "
                f"(first input: id {unmatched[0][0]!r}, subset {unmatched[0][1]!r}; the file holds "
                f"{len(table)} questions, subsets {in_file or 'not matched'}); "
                "is it the rewrite file for this benchmark?",
            )
        if unmatched:
            shown = ", ".join(f"{i}/{s}" if s else i for i, s in unmatched[:5])
            log.warning(
                "%s: %d of %d input questions have no rewrite in %s and are left out (e.g. %s)",
                self.name,
                len(unmatched),
                len(samples),
                self.path,
                shown,
            )
        return out

    def rewrite(self, sample: Sample) -> list[Sample]:
        return self.apply([sample])
