"""The model before unlearning, three ways, chosen in config (``method/reference=...``).

- ``precompute``: one pass over the needed splits and views before training; per-row answer NLLs
  (or RMU's layer-k states) are cached on disk, each row under a hash of the content it scores
  (its unpadded input ids, its label row, its image's pixels), in a folder keyed by the model,
  the processor, the collator settings and the storage dtype. Any view of any split is cached;
  new content is computed, cached content is reused, never recomputed.
- ``adapters_off``: under LoRA, the same model with its adapters disabled (no second copy).
- ``frozen_copy``: a frozen deep copy made before training, truncated after the last layer
  the method reads when it only needs hidden states.

All three answer the same two questions about any collated batch (or view of one), so a method's loss
does not depend on the choice: ``sequence_nll(method, batch, label_key)`` and
``layer_states(method, batch, layer)``. A method declares what it reads in ``ReferenceNeed``s.
"""

from mirage.methods.reference.live import (
    AdaptersOff,
    FrozenCopy,
    ReferenceNeed,
    ReferenceStrategy,
    Untrained,
    eval_mode,
)
from mirage.methods.reference.precompute import Precompute, row_keys

__all__ = [
    "AdaptersOff",
    "FrozenCopy",
    "Precompute",
    "ReferenceNeed",
    "ReferenceStrategy",
    "Untrained",
    "eval_mode",
    "row_keys",
]
