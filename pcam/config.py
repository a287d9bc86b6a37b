"""The settings of training runs and full checks: plain dataclasses, free of TensorFlow.

:class:`TrainConfig` (``pcam train``) and :class:`FullCheckConfig` (``pcam fullcheck``) are the
one home of every setting's default and meaning: the command line builds its options from their
fields and field docstrings (:mod:`pcam.cli.options`), and a run records its config as
``config.json``. They import no TensorFlow, so ``pcam --help`` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pcam import layout
from pcam.errors import InvalidArgumentError

Architecture = Literal["resnet50", "small"]
ARCHITECTURES: tuple[Architecture, ...] = ("resnet50", "small")
"""The classifier architectures (:func:`pcam.model.architectures.build_model`)."""

SMALL_WIDTH = 32
"""Filters of the small CNN's first block; each of its next three blocks doubles them (32 to 256:
the width of the training recipe, chosen on the real sample; see the README's "Training
recipe")."""

STRATEGIES = ("default", "mirrored", "multiworker")
LR_SCHEDULES = ("cosine", "constant")

COLOUR_AUGMENTS = ("hed-light", "hed-strong", "rgb", "rgb+hed-light", "rgb+hed-strong", "none")
"""The colour augmentations of training (:mod:`pcam.stain.augment`): HED stain jitter (Tellez et
al.'s light and strong presets), the moderate RGB jitter, HED then RGB, or none (D4 only)."""
DEFAULT_COLOUR_AUGMENT = "hed-light"
"""The colour augmentation of ``pcam train`` and ``pcam fullcheck`` (chosen on the real sample;
see the README's "Training recipe")."""
AUGMENT_PLACEMENTS = ("device", "loader")
"""Where the colour augmentation runs: in the model's train step (``device``) or in the loader."""


def check_colour_augment(kind: str) -> None:
    """Raise a one-line :class:`InvalidArgumentError` unless ``kind`` is a colour augmentation."""
    if kind not in COLOUR_AUGMENTS:
        raise InvalidArgumentError("colour_augment", f"one of {', '.join(COLOUR_AUGMENTS)}", kind)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (saved as ``config.json`` in the run directory)."""

    data: str
    """Directory of PCam files with train and valid splits."""
    out: str
    """Run directory."""
    epochs: int = 10
    """Epochs to train (early stopping may end the run sooner)."""
    batch_size: int = 32
    """Global batch size (split across replicas)."""
    model: str = "resnet50"
    """``resnet50`` or ``small`` (a small CNN for fast runs on a CPU)."""
    weights: str | None = None
    """Backbone weights: ``imagenet``, a local weights file, or none (random)."""
    width: int = SMALL_WIDTH
    """Filters of the small CNN's first block (doubled at each of the next three); small only."""
    freeze_backbone: bool = False
    """Train only the head (first phase of fine-tuning)."""
    init: str | None = None
    """A saved pcam model (``.keras``) whose weights the run starts from, all of them, batch-norm
    statistics included: a phase-1 run's ``model.keras`` for the second phase of fine-tuning. Its
    architecture must be this run's; ``weights`` must then be none."""
    unfreeze_from: str | None = None
    """Train the backbone only from this layer on (the top blocks: ``conv5_block1_1_conv`` in
    ResNet50); the layers before it and every batch-norm layer stay frozen
    (:func:`pcam.model.architectures.set_backbone_trainable`). The head always trains."""
    lr: float = 1e-3
    """Adam learning rate (the peak, with the cosine schedule)."""
    lr_schedule: str = "cosine"
    """``cosine`` (decay from ``lr`` to 1% of it over all epochs) or ``constant``."""
    label_smoothing: float = 0.0
    """Label smoothing of the binary cross-entropy: targets ``0 + s/2`` and ``1 - s/2``."""
    max_train_samples: int | None = None
    """Patches per epoch, when less than the whole train split."""
    seed: int = 0
    """Seed of the model initialisation, the shuffle and the augmentation."""
    colour_augment: str = DEFAULT_COLOUR_AUGMENT
    """Colour augmentation of the training patches, after the D4 symmetries: ``hed-light`` or
    ``hed-strong`` (stain jitter in HED optical density), ``rgb`` (brightness, contrast,
    saturation, hue), ``rgb+hed-light`` / ``rgb+hed-strong`` (both), or ``none``."""
    augment_on: str | None = None
    """Where the colour augmentation runs: ``device`` (a Keras layer in the model's train step,
    a no-op at inference) or ``loader`` (the tf.data pipeline, on the CPU); none: ``device``
    where a GPU is present, else ``loader``. D4 always runs in the loader."""
    strategy: str = "default"
    """``default`` (one device), ``mirrored`` (all local devices) or ``multiworker`` (TF_CONFIG)."""
    patience: int = 10
    """Epochs without a better validation loss before stopping early."""
    overwrite: bool = False
    """Start afresh in a run folder pcam wrote, finished or interrupted (without it a finished
    run is refused and an interrupted one resumes); only the run's own files go."""
    mixed_precision: bool | None = None
    """Compute in float16 with float32 variables; none: on where a GPU is present."""
    xla: bool | None = None
    """Compile the train step with XLA; none: on where a GPU is present."""
    deterministic: bool = False
    """Bit-identical runs for the same seed on the same machine: seeded, deterministic ops
    (slower on a GPU; see :func:`pcam.model.train.deterministic_ops` and the README)."""

    def check(self) -> None:
        """Raise :class:`InvalidArgumentError` for a setting out of range."""
        if self.epochs < 1:
            raise InvalidArgumentError("epochs", "an integer >= 1", self.epochs)
        if self.batch_size < 1:
            raise InvalidArgumentError("batch_size", "an integer >= 1", self.batch_size)
        if self.width < 1:
            raise InvalidArgumentError("width", "an integer >= 1", self.width)
        if self.model not in ARCHITECTURES:
            raise InvalidArgumentError("model", f"one of {', '.join(ARCHITECTURES)}", self.model)
        if not 0 < self.lr < 1:
            raise InvalidArgumentError("lr", "a learning rate in (0, 1)", self.lr)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InvalidArgumentError(
                "label_smoothing", "a number in [0, 1)", self.label_smoothing
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise InvalidArgumentError(
                "lr_schedule", f"one of {', '.join(LR_SCHEDULES)}", self.lr_schedule
            )
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise InvalidArgumentError(
                "max_train_samples", "an integer >= 1", self.max_train_samples
            )
        if self.strategy not in STRATEGIES:
            raise InvalidArgumentError("strategy", f"one of {', '.join(STRATEGIES)}", self.strategy)
        check_colour_augment(self.colour_augment)
        if self.augment_on is not None and self.augment_on not in AUGMENT_PLACEMENTS:
            raise InvalidArgumentError(
                "augment_on", f"one of {', '.join(AUGMENT_PLACEMENTS)}", self.augment_on
            )
        if self.patience < 1:
            raise InvalidArgumentError("patience", "an integer >= 1", self.patience)
        if self.init is not None and self.weights is not None:
            raise InvalidArgumentError(
                "weights",
                "none with init (the run starts from the init model's weights)",
                self.weights,
            )
        if self.unfreeze_from is not None and self.freeze_backbone:
            raise InvalidArgumentError(
                "freeze_backbone",
                "off with unfreeze_from (which trains the top of the backbone)",
                self.freeze_backbone,
            )


#: The floors the issue asks of ResNet50 on the PCam test split (configurable).
DEFAULT_MIN_ACCURACY = 0.90
DEFAULT_MIN_AUC = 0.965

UNFREEZE_FROM = {"resnet50": "conv5_block1_1_conv", "small": "block4_conv"}
"""The first layer phase 2 of a two-phase check trains, by architecture: the last stage."""


@dataclass(frozen=True)
class FullCheckConfig:
    """The recipe and the floors of one full training check.

    The defaults are the recipe for full PCam on one GPU (see the README's "Full training check"):
    ImageNet ResNet50 fine-tuned end to end (PCam's stain colours and scale are far from ImageNet,
    so every block is trained, batch-norm statistics included), Adam at a peak of 1e-4 decayed by
    a cosine, batches of 128, D4 symmetries and the HED stain jitter on every patch, early
    stopping on the validation loss, and test-time averaging over the 8 symmetries, which are
    label-preserving for these rotation-free tissue patches.
    """

    data: str
    """Directory of PCam files: train, valid and the evaluation split."""
    out: str
    """Output directory (``run/``, ``report/``, ``explain/``, ``fullcheck.json``)."""
    model: str = "resnet50"
    """``resnet50`` or ``small``."""
    weights: str | None = "imagenet"
    """Backbone weights: ``imagenet``, a local weights file, or none (random)."""
    epochs: int = 10
    """Epochs over the train split (early stopping may end sooner)."""
    batch_size: int = 128
    """Global batch size."""
    lr: float = 1e-4
    """Peak learning rate of the cosine schedule."""
    patience: int = 3
    """Epochs without a better validation loss before stopping."""
    max_train_samples: int | None = None
    """Patches per epoch, when less than the whole train split (tiny budgets)."""
    eval_split: str = "test"
    """Split the floors apply to."""
    tta: bool = True
    """Average the test predictions over the 8 symmetries of the square."""
    min_accuracy: float = DEFAULT_MIN_ACCURACY
    """Fail below this accuracy on ``eval_split``."""
    min_auc: float = DEFAULT_MIN_AUC
    """Fail below this ROC AUC on ``eval_split``."""
    require_gpu: bool = False
    """Refuse to start unless TensorFlow sees a GPU."""
    explain_patches: int = 16
    """Patches of ``eval_split`` in the Grad-CAM grid."""
    robustness: bool = True
    """Score ``eval_split`` again under the fixed stain and scanner shifts of ``pcam
    robustness`` (``robustness/``, and a ``robustness`` block in ``fullcheck.json``)."""
    seed: int = 0
    """Seed of the initialisation, the shuffle and the augmentation."""
    colour_augment: str = DEFAULT_COLOUR_AUGMENT
    """Colour augmentation of the training patches (see ``pcam train --colour-augment``)."""
    augment_on: str | None = None
    """Where the colour augmentation runs: ``device`` or ``loader``; none: ``device`` where a
    GPU is present, else ``loader``."""
    overwrite: bool = False
    """Start afresh where a finished check is."""
    two_phase: bool = False
    """Fine-tune in two phases: first the head alone on a frozen backbone (``run-head/``,
    ``head_epochs`` at ``head_lr``), then, from that model, the head and the backbone from
    ``unfreeze_from`` on with batch norm frozen (``run/``, ``epochs`` at ``lr``)."""
    head_epochs: int = 2
    """Epochs of phase 1 of a two-phase check."""
    head_lr: float = 1e-3
    """Peak learning rate of phase 1 of a two-phase check."""
    unfreeze_from: str | None = None
    """The first backbone layer phase 2 trains (``None``: :data:`UNFREEZE_FROM` of the model)."""

    def check(self) -> None:
        """Raise :class:`InvalidArgumentError` for a setting out of range."""
        if self.eval_split not in layout.SPLITS:
            raise InvalidArgumentError(
                "eval_split", f"one of {', '.join(layout.SPLITS)}", self.eval_split
            )
        for name in ("min_accuracy", "min_auc"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidArgumentError(name, "a number in [0, 1]", value)
        if self.explain_patches < 1:
            raise InvalidArgumentError("explain_patches", "an integer >= 1", self.explain_patches)
        if self.head_epochs < 1:
            raise InvalidArgumentError("head_epochs", "an integer >= 1", self.head_epochs)
        check_colour_augment(self.colour_augment)
        if not 0 < self.head_lr < 1:
            raise InvalidArgumentError("head_lr", "a learning rate in (0, 1)", self.head_lr)
