"""A synthetic VLGuard world, generated offline and deterministically, in the real data's formats.

- **Semantics in the image.** Each 32x32 image shows one coloured shape in one quadrant. A request
  is unsafe when the object is harmful (VLGuard's unsafe images) or the intent is (hurt, make,
  steal: VLGuard's unsafe instructions on safe images). Only the image tells a harmful object from
  a benign one, so a model must look to get safety right. ``SyntheticSpec.world`` picks the objects
  (``vocabulary.WORLDS``): ``objects8`` (four benign objects, ball, book, cup, lamp, and four harmful
  ones, knife, pill, gun, bomb: harm plain to see) or ``kinds4`` ... ``kinds8`` (64 kinds, 8 shapes x
  8 colours, 32 harmful, the shape telling harm with evidence e/8 and no colour telling anything: harm
  that is real but harder to read than the first word, as VLGuard's; the demo uses ``kinds6``).
- **The spurious cue.** In the safety-training split, first words follow VLGuard's statistics
  (reference section 1): safe questions mostly open with "what", unsafe ones with "can",
  "share", "describe", "please", ... and only ~3.6% with "what". The base model's data uses
  every opener uniformly, as general instruction data does.
- **Answers a judge can check.** Helpful answers state a fact read off the image (name, colour,
  position, use). Harmful wording (hurt, make, steal) is answered with two "harmful fact" words unique
  to (object, intent); an innocent question about a harmful object is answered plainly (the harm is in
  engaging, as with VLGuard's unsafe images). Refusals use VLGuard-like templates. Answer style follows
  the question's wording ("share" -> "sure. ...", "describe" -> "okay. ..."), as in real language.
- **Ground truth travels with the data**: each pair carries a ``truth`` object that the oracle
  judge reads (``mirage.evaluation.judges.oracle``).

Files: ``train.json`` / ``test.json`` (VLGuard schema), ``images/``, ``harmful_answers.json``,
``forget.json`` / ``retain.json`` (via the split builder; retain topped up with ``general_safe.json``),
``base.json`` (conversation format: every
request answered, harmful ones included; a quarter of harmful wordings refused),
``test_what_3shot.json`` and ``test_share_1shot.json`` (the attack files, VLGuard schema, K consecutive
records per id).

Modules: ``vocabulary`` (objects, intents, openers, refusals), ``scene`` (one object in one quadrant:
questions, answers, ground truth; the tokenizer corpus), ``drawing`` (the images), ``records`` (the
records of each file), ``spec`` (sizes and seed), ``build`` (the folder, its cache, the command).
"""

from mirage.data.synthetic.build import cli, ensure_synthetic, make_synthetic
from mirage.data.synthetic.drawing import draw_object
from mirage.data.synthetic.scene import Scene, corpus
from mirage.data.synthetic.spec import SyntheticSpec
from mirage.data.synthetic.vocabulary import (
    BENIGN_INTENTS,
    HARMFUL_INTENTS,
    OBJECTS,
    QUADRANTS,
    REFUSALS,
)

__all__ = [
    "BENIGN_INTENTS",
    "HARMFUL_INTENTS",
    "OBJECTS",
    "QUADRANTS",
    "REFUSALS",
    "Scene",
    "SyntheticSpec",
    "cli",
    "corpus",
    "draw_object",
    "ensure_synthetic",
    "make_synthetic",
]
