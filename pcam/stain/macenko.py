"""Macenko stain normalisation, in NumPy: fit a reference's stains, map every patch onto them.

Macenko et al. (2009, "A method for normalizing histology slides for quantitative analysis")
estimate the two stain vectors of an H&E image from its pixels' optical densities,
``OD = ln(256 / (I + 1))`` per channel (the project's convention, as in :mod:`pcam.stain.hed`:
255 is 0, and the round trip ``I -> OD -> I`` is exact):

1. keep the tissue pixels (see below) and take the plane of the two largest eigenvectors of
   their OD second-moment matrix ``OD^T OD / n`` (not centred: the stain model's plane passes
   through the origin, no stain being no optical density);
2. project each pixel onto that plane and take its angle; the ``angle_percentile`` and
   ``100 - angle_percentile`` percentile angles (robust extremes) give the two stain vectors;
3. haematoxylin is the vector with the larger red OD component (it absorbs red more: Ruifrok's
   H is ``[0.65, 0.70, 0.29]``, E ``[0.07, 0.99, 0.11]``); both point into positive OD;
4. the concentrations are the least-squares solution of ``OD = C @ M`` for the ``[2, 3]`` stain
   matrix ``M``, and each stain's maximum concentration is the 99th percentile of its
   concentration over the tissue pixels.

:func:`normalise` fits every patch on its own, scales its concentrations so that its maximum
concentrations become the reference's and mixes them back with the reference's stain matrix.
Per patch that is one linear map of the OD vectors (a ``3 x 3`` matrix): a white pixel (OD 0)
stays exactly white, and every pixel is unmixed, tissue or not.

Choices of this module:

- **Tissue pixels.** A pixel is tissue when its optical density is above ``od_threshold``
  (0.15) in *any* channel. Macenko's original rule (all three channels) drops pale eosin-only
  pixels, since eosin absorbs little red (Ruifrok's E has 0.07 red OD per unit), and so biases
  the eosin vector towards haematoxylin.
- **Minimum.** A fit needs at least :data:`MIN_TISSUE_PIXELS` (100) tissue pixels: below 100
  values the 1st and 99th percentiles are the extreme values themselves, so outliers are no
  longer excluded. Fewer raise :class:`BackgroundOnlyError` in :func:`fit_stains`.
- **One stain.** Stain vectors less than :data:`MIN_STAIN_ANGLE_DEGREES` (3) apart (a patch of
  one colour), or a maximum concentration that is not positive, cannot be unmixed:
  :class:`SingleStainError` in :func:`fit_stains`. (On the real PCam validation sample, 99% of
  the patches with tissue fit stains more than 16 degrees apart; Ruifrok's H and E are 39.)
- **Patches that cannot be fitted** in :func:`normalise` (background-only, or one stain) pass
  through unchanged, exactly, and one :class:`StainNormalisationWarning` per call says how many
  of the batch did and why. A classifier sees glass as glass, instead of a call failing on the
  white patches any slide holds; an all-background batch comes back unchanged with the warning.
  :class:`StainNormaliser` counts them over all its calls (:attr:`StainNormaliser.unchanged`)
  and, made with ``warn=False``, leaves the telling to its caller: the command line says it
  once per run rather than once per batch.

A batch is fitted patch by patch in one vectorised pass: the ``[B, 3, 3]`` second moments go
through one batched ``eigh``, and the percentiles over each patch's tissue pixels are read from
one sort in which the other pixels sort last (:func:`masked_percentiles`).
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from pcam.errors import (
    InvalidArgumentError,
    LayoutError,
    MissingFileError,
    PCamError,
    UnreadableFileError,
)

if TYPE_CHECKING:
    from pcam.data.patch_io import FitMode

FloatArray = npt.NDArray[np.float64]
ByteArray = npt.NDArray[np.uint8]

STAINS: Final = ("haematoxylin", "eosin")
"""The rows of a stain matrix, in order."""
DEFAULT_OD_THRESHOLD: Final = 0.15
"""Optical density above which (in any channel) a pixel is tissue."""
DEFAULT_ANGLE_PERCENTILE: Final = 1.0
"""Percentile of the pixels' angles in the stain plane taken as the robust extreme (and 100-)."""
CONCENTRATION_PERCENTILE: Final = 99.0
"""Percentile of each stain's concentration over the tissue pixels that is its maximum."""
MIN_TISSUE_PIXELS: Final = 100
"""Fewest tissue pixels a fit accepts (see the module's docstring)."""
MIN_STAIN_ANGLE_DEGREES: Final = 3.0
"""Smallest angle between the two fitted stain vectors that a fit accepts."""
REFERENCE_KIND: Final = "pcam-macenko-reference"
"""The ``kind`` of the JSON file :meth:`StainNormaliser.save` writes."""

_LOG_256: Final = float(np.log(256.0))
_OD_TABLE: Final = _LOG_256 - np.log(np.arange(256, dtype=np.float64) + 1.0)
"""The optical density of each uint8 intensity."""
_TINY: Final = 1e-6


# -- errors and warnings ---------------------------------------------------------------------------


class StainFitError(PCamError, ValueError):
    """Pixels from which no stain matrix can be fitted."""


class BackgroundOnlyError(StainFitError):
    """A reference with too few tissue pixels (see :data:`MIN_TISSUE_PIXELS`) to fit its stains."""

    def __init__(self, found: int, od_threshold: float, source: object = None) -> None:
        self.found = found
        where = f"{source}: " if source is not None else ""
        super().__init__(
            f"{where}background-only reference: expected patches with stained tissue (at least "
            f"{MIN_TISSUE_PIXELS} pixels with optical density above {od_threshold:g} in some "
            f"channel), found {found}; fit on patches that show tissue"
        )


class SingleStainError(StainFitError):
    """A reference whose tissue shows one stain colour only: two stains cannot be told apart."""

    def __init__(self, angle: float, source: object = None) -> None:
        self.angle = angle
        where = f"{source}: " if source is not None else ""
        super().__init__(
            f"{where}one-stain reference: expected two stain colours (haematoxylin and eosin) at "
            f"least {MIN_STAIN_ANGLE_DEGREES:g} degrees apart in optical density, found "
            f"{angle:.1f} degrees; fit on patches that show both nuclei and stroma"
        )


class StainNormalisationWarning(UserWarning):
    """Some patches of a batch could not be fitted and passed through unchanged."""


# -- the stains ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MacenkoStains:
    """The stains of a reference: what :func:`normalise` maps every patch onto.

    Both arrays are float64 and read-only; two instances are equal when their arrays are.
    """

    stain_matrix: FloatArray
    """``[2, 3]``: the unit OD vectors (R, G, B) of haematoxylin (first row) and eosin."""
    max_concentrations: FloatArray
    """``[2]``: the 99th percentile of each stain's concentration over the tissue pixels."""

    def __post_init__(self) -> None:
        matrix = _checked_array("stain_matrix", self.stain_matrix, (2, 3))
        maxima = _checked_array("max_concentrations", self.max_concentrations, (2,))
        norms = np.linalg.norm(matrix, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-6):
            raise InvalidArgumentError("stain_matrix", "rows of unit length", norms.tolist())
        if not np.all(maxima > 0.0):
            raise InvalidArgumentError("max_concentrations", "positive numbers", maxima.tolist())
        object.__setattr__(self, "stain_matrix", matrix)
        object.__setattr__(self, "max_concentrations", maxima)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MacenkoStains):
            return NotImplemented
        return bool(
            np.array_equal(self.stain_matrix, other.stain_matrix)
            and np.array_equal(self.max_concentrations, other.max_concentrations)
        )

    def __hash__(self) -> int:
        return hash((self.stain_matrix.tobytes(), self.max_concentrations.tobytes()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: the stain names, the stain matrix rows and the max concentrations."""
        return {
            "stains": list(STAINS),
            "stain_matrix": self.stain_matrix.tolist(),
            "max_concentrations": self.max_concentrations.tolist(),
        }

    @classmethod
    def from_dict(cls, values: object) -> MacenkoStains:
        """The stains :meth:`to_dict` gave (other keys are ignored).

        Raises :class:`pcam.errors.InvalidArgumentError` for a value that is not such a dict.
        """
        if not isinstance(values, dict) or not {"stain_matrix", "max_concentrations"} <= set(
            values
        ):
            found = list(values) if isinstance(values, dict) else type(values).__name__
            raise InvalidArgumentError(
                "stains", "a dict with stain_matrix and max_concentrations", found
            )
        stains = values.get("stains", list(STAINS))
        if stains != list(STAINS):
            raise InvalidArgumentError("stains", f"the stains {list(STAINS)} in order", stains)
        return cls(
            stain_matrix=_numbers("stain_matrix", values["stain_matrix"]),
            max_concentrations=_numbers("max_concentrations", values["max_concentrations"]),
        )


def _numbers(name: str, value: object) -> FloatArray:
    """``value`` (nested lists of numbers) as a float64 array, or a one-line error."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError(name, "nested lists of numbers", value) from None


def _checked_array(name: str, value: object, shape: tuple[int, ...]) -> FloatArray:
    """A read-only float64 copy of ``value`` after checking its shape and that it is finite."""
    array = _numbers(name, value).copy()
    if array.shape != shape or not np.all(np.isfinite(array)):
        found = f"shape {list(array.shape)}" if array.shape != shape else "non-finite values"
        raise InvalidArgumentError(name, f"finite numbers of shape {list(shape)}", found)
    array.setflags(write=False)
    return array


# -- fitting ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fits:
    """The fits of ``G`` groups of pixels (a patch each, or one pooled reference)."""

    stain_matrices: FloatArray
    """``[G, 2, 3]``."""
    max_concentrations: FloatArray
    """``[G, 2]``."""
    unmixing: FloatArray
    """``[G, 3, 2]``: the pseudo-inverse of each stain matrix (``C = OD @ unmixing``)."""
    tissue_pixels: npt.NDArray[np.int64]
    """``[G]``."""
    angles: FloatArray
    """``[G]``: degrees between the two stain vectors."""

    @property
    def background(self) -> npt.NDArray[np.bool_]:
        """``[G]``: too few tissue pixels to fit."""
        return self.tissue_pixels < MIN_TISSUE_PIXELS

    @property
    def single_stain(self) -> npt.NDArray[np.bool_]:
        """``[G]``: enough tissue, but the two stains cannot be told apart."""
        unmixable = np.all(self.max_concentrations > _TINY, axis=1)
        single: npt.NDArray[np.bool_] = ~self.background & (
            (self.angles < MIN_STAIN_ANGLE_DEGREES) | ~unmixable
        )
        return single

    @property
    def fitted(self) -> npt.NDArray[np.bool_]:
        """``[G]``: the groups whose fit can be used."""
        return ~self.background & ~self.single_stain


def optical_density(images: npt.NDArray[np.uint8]) -> FloatArray:
    """``uint8`` intensities ``I`` to optical density ``ln(256 / (I + 1))``, float64."""
    return _OD_TABLE[np.asarray(images, dtype=np.uint8).astype(np.intp)]  # intp: fast indexing


def intensities(density: npt.ArrayLike) -> ByteArray:
    """Optical density back to ``uint8``: ``256 * exp(-OD) - 1``, rounded and clipped."""
    values = 256.0 * np.exp(-np.asarray(density, dtype=np.float64)) - 1.0
    return np.clip(np.floor(values + 0.5), 0.0, 255.0).astype(np.uint8)


def tissue_mask(density: FloatArray, od_threshold: float) -> npt.NDArray[np.bool_]:
    """Pixels (``[..., 3]`` optical densities) above ``od_threshold`` in any channel."""
    mask: npt.NDArray[np.bool_] = np.any(density > od_threshold, axis=-1)
    return mask


def masked_percentiles(
    values: FloatArray, mask: npt.NDArray[np.bool_], percentiles: Sequence[float]
) -> FloatArray:
    """Percentiles of ``values [G, N]`` over the entries where ``mask`` is true, row by row.

    The same linear interpolation as :func:`numpy.percentile`; returns ``[len(percentiles), G]``,
    with 0 for a row with no entry.
    """
    if values.shape[-1] == 0:
        return np.zeros((len(percentiles), values.shape[0]))
    if np.all(mask):  # every entry counts: numpy's own (a partial sort)
        return np.percentile(values, list(percentiles), axis=-1).reshape(len(percentiles), -1)
    ordered = np.sort(np.where(mask, values, np.inf), axis=-1)
    ordered[~np.isfinite(ordered)] = 0.0  # after the counted entries: never read but by empty rows
    last = np.maximum(mask.sum(axis=-1) - 1, 0)
    rows = []
    for percentile in percentiles:
        position = percentile / 100.0 * last
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, last)
        below = np.take_along_axis(ordered, low[:, None], axis=-1)[:, 0]
        above = np.take_along_axis(ordered, high[:, None], axis=-1)[:, 0]
        rows.append(below + (position - low) * (above - below))
    return np.stack(rows)


def _stain_plane(density: FloatArray, mask: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
    """The two largest eigenvectors ``[G, 3]`` each of the tissue pixels' OD second moments.

    The first is turned to point into positive OD.
    """
    weights = mask / np.maximum(mask.sum(axis=-1, keepdims=True), 1)
    moments = np.matmul((density * weights[..., None]).transpose(0, 2, 1), density)
    _, vectors = np.linalg.eigh(moments)  # ascending eigenvalues
    first, second = vectors[..., 2], vectors[..., 1]
    return first * _signs(first), second


def _apply(density: FloatArray, maps: FloatArray) -> FloatArray:
    """``density [G, N, 3]`` times each group's matrix ``maps [G, 3, K]``: ``[G, N, K]``.

    ``einsum``: numpy's stacked ``matmul`` with an inner size of 3 is many times slower.
    """
    product: FloatArray = np.einsum("gnc,gck->gnk", density, maps)
    return product


def _signs(vectors: FloatArray) -> FloatArray:
    """``[G, 1]``: -1 for a vector ``[G, 3]`` whose components sum below 0, else 1."""
    return np.where(vectors.sum(axis=-1, keepdims=True) < 0.0, -1.0, 1.0)


def _stain_vectors(
    density: FloatArray, mask: npt.NDArray[np.bool_], angle_percentile: float
) -> FloatArray:
    """``[G, 2, 3]``: each group's unit haematoxylin and eosin vectors (steps 1 to 3)."""
    first, second = _stain_plane(density, mask)
    projected = _apply(density, np.stack([first, second], axis=-1))  # [G, N, 2]
    angles = np.arctan2(projected[..., 1], projected[..., 0])
    low, high = masked_percentiles(angles, mask, (angle_percentile, 100.0 - angle_percentile))
    ends = [np.cos(a)[:, None] * first + np.sin(a)[:, None] * second for a in (low, high)]
    ends = [v * _signs(v) for v in ends]
    low_is_h = (ends[0][:, 0] >= ends[1][:, 0])[:, None]
    matrix = np.stack(
        [np.where(low_is_h, ends[0], ends[1]), np.where(low_is_h, ends[1], ends[0])], axis=1
    )
    unit: FloatArray = matrix / np.maximum(np.linalg.norm(matrix, axis=-1, keepdims=True), _TINY)
    return unit


def _fit_groups(
    density: FloatArray,
    mask: npt.NDArray[np.bool_],
    angle_percentile: float,
) -> _Fits:
    """Fit the stains of each group of pixels: ``density [G, N, 3]``, tissue ``mask [G, N]``."""
    matrices = _stain_vectors(density, mask, angle_percentile)
    cosines = np.clip(np.einsum("gc,gc->g", matrices[:, 0], matrices[:, 1]), -1.0, 1.0)
    unmixing = np.linalg.pinv(matrices).astype(np.float64)  # [G, 3, 2]; finite even if parallel
    concentrations = _apply(density, unmixing)  # [G, N, 2]
    maxima = np.stack(
        [
            masked_percentiles(concentrations[..., s], mask, (CONCENTRATION_PERCENTILE,))[0]
            for s in range(len(STAINS))
        ],
        axis=-1,
    )
    return _Fits(
        stain_matrices=matrices,
        max_concentrations=maxima,
        unmixing=unmixing,
        tissue_pixels=mask.sum(axis=-1).astype(np.int64),
        angles=np.degrees(np.arccos(cosines)),
    )


def fit_stains(
    images: npt.ArrayLike,
    *,
    od_threshold: float = DEFAULT_OD_THRESHOLD,
    angle_percentile: float = DEFAULT_ANGLE_PERCENTILE,
) -> MacenkoStains:
    """Fit the stains of one patch ``uint8 [H, W, 3]`` or of a batch ``[B, H, W, 3]`` pooled.

    Raises :class:`BackgroundOnlyError` with fewer than :data:`MIN_TISSUE_PIXELS` tissue pixels
    (optical density above ``od_threshold`` in some channel), :class:`SingleStainError` when the
    two stains cannot be told apart, and :class:`pcam.errors.InvalidArgumentError` for an array
    that is not uint8 RGB or a parameter out of range.
    """
    batch, _ = _as_batch(images)
    _check_parameters(od_threshold, angle_percentile)
    density = optical_density(batch).reshape(-1, 3)
    tissue = density[tissue_mask(density, od_threshold)][None]  # [1, T, 3]: tissue only
    if tissue.shape[1] < MIN_TISSUE_PIXELS:
        raise BackgroundOnlyError(tissue.shape[1], od_threshold)
    fits = _fit_groups(tissue, np.ones(tissue.shape[:2], dtype=bool), angle_percentile)
    if fits.single_stain[0]:
        raise SingleStainError(float(fits.angles[0]))
    return MacenkoStains(fits.stain_matrices[0], fits.max_concentrations[0])


# -- normalising -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unchanged:
    """How many patches :func:`normalise` passed through unchanged, and why."""

    patches: int
    """Patches normalised or passed through."""
    background: int
    """Passed through: fewer than :data:`MIN_TISSUE_PIXELS` tissue pixels."""
    one_stain: int
    """Passed through: one stain colour (see :data:`MIN_STAIN_ANGLE_DEGREES`)."""

    @property
    def count(self) -> int:
        """Patches passed through unchanged."""
        return self.background + self.one_stain

    def __add__(self, other: Unchanged) -> Unchanged:
        return Unchanged(
            self.patches + other.patches,
            self.background + other.background,
            self.one_stain + other.one_stain,
        )

    def message(self, od_threshold: float = DEFAULT_OD_THRESHOLD) -> str:
        """One line: how many of how many patches passed through unchanged, and why."""
        reasons = []
        if self.background:
            reasons.append(
                f"{self.background:,} background-only (fewer than {MIN_TISSUE_PIXELS} pixels "
                f"with optical density above {od_threshold:g} in some channel)"
            )
        if self.one_stain:
            reasons.append(
                f"{self.one_stain:,} with one stain colour (stain vectors less than "
                f"{MIN_STAIN_ANGLE_DEGREES:g} degrees apart)"
            )
        return (
            f"stain normalisation: {self.count:,} of {self.patches:,} patches passed through "
            f"unchanged, their stains could not be fitted: {'; '.join(reasons)}"
        )


def normalise(
    images: npt.ArrayLike,
    reference: MacenkoStains,
    *,
    od_threshold: float = DEFAULT_OD_THRESHOLD,
    angle_percentile: float = DEFAULT_ANGLE_PERCENTILE,
) -> ByteArray:
    """Map each patch of ``uint8 [B, H, W, 3]`` (or one ``[H, W, 3]``) onto ``reference``'s stains.

    Each patch gets its own fit; its concentrations are scaled to the reference's maximum
    concentrations and mixed with the reference's stain matrix. Returns a new uint8 array of
    the same shape. Patches that cannot be fitted (see the module's docstring) come back
    unchanged, and one :class:`StainNormalisationWarning` says how many.
    """
    result, unchanged = normalise_counted(
        images, reference, od_threshold=od_threshold, angle_percentile=angle_percentile
    )
    if unchanged.count:
        warnings.warn(unchanged.message(od_threshold), StainNormalisationWarning, stacklevel=2)
    return result


def normalise_counted(
    images: npt.ArrayLike,
    reference: MacenkoStains,
    *,
    od_threshold: float = DEFAULT_OD_THRESHOLD,
    angle_percentile: float = DEFAULT_ANGLE_PERCENTILE,
) -> tuple[ByteArray, Unchanged]:
    """:func:`normalise` without the warning: the patches, and how many passed unchanged."""
    batch, single = _as_batch(images)
    _check_parameters(od_threshold, angle_percentile)
    if not isinstance(reference, MacenkoStains):
        raise InvalidArgumentError("reference", "MacenkoStains", type(reference).__name__)
    count = batch.shape[0]
    if count == 0:
        return batch.copy(), Unchanged(0, 0, 0)
    density = optical_density(batch).reshape(count, -1, 3)
    fits = _fit_groups(density, tissue_mask(density, od_threshold), angle_percentile)
    result = batch.copy()
    fitted = fits.fitted
    if np.any(fitted):
        scales = reference.max_concentrations / fits.max_concentrations[fitted]  # [F, 2]
        maps = (fits.unmixing[fitted] * scales[:, None, :]) @ reference.stain_matrix  # [F, 3, 3]
        moved = _apply(density[fitted], maps)
        result[fitted] = intensities(moved).reshape(batch[fitted].shape)
    unchanged = Unchanged(count, int(fits.background.sum()), int(fits.single_stain.sum()))
    return (result[0] if single else result), unchanged


def _as_batch(images: npt.ArrayLike) -> tuple[ByteArray, bool]:
    """``images`` as ``uint8 [B, H, W, 3]``, and whether it was one patch ``[H, W, 3]``."""
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise InvalidArgumentError(
            "images",
            "uint8 RGB patches [H, W, 3] or [B, H, W, 3]",
            f"{array.dtype} {list(array.shape)}",
        )
    single = array.ndim == 3
    return (array[None] if single else array), single


def _check_parameters(od_threshold: float, angle_percentile: float) -> None:
    if not (np.isfinite(od_threshold) and 0.0 <= od_threshold < _LOG_256):
        raise InvalidArgumentError(
            "od_threshold", f"an optical density in [0, {_LOG_256:.3f})", od_threshold
        )
    if not (np.isfinite(angle_percentile) and 0.0 <= angle_percentile < 50.0):
        raise InvalidArgumentError("angle_percentile", "a percentile in [0, 50)", angle_percentile)


# -- the normaliser --------------------------------------------------------------------------------


class StainNormaliser:
    """Normalise patches to one reference's stains: ``normaliser(images)``.

    Make one from patches (:meth:`fit`), or from an image, a folder of images or a saved
    reference (:meth:`from_path`); :meth:`save` writes the reference as JSON.
    """

    def __init__(
        self,
        reference: MacenkoStains,
        *,
        source: str = "a fitted reference",
        od_threshold: float = DEFAULT_OD_THRESHOLD,
        warn: bool = True,
    ) -> None:
        _check_parameters(od_threshold, DEFAULT_ANGLE_PERCENTILE)
        if not isinstance(reference, MacenkoStains):
            raise InvalidArgumentError("reference", "MacenkoStains", type(reference).__name__)
        self.reference = reference
        self.source = source
        self.od_threshold = od_threshold
        self.warn = warn
        """Warn on every call that passes patches through (else see :attr:`unchanged`)."""
        self.unchanged = Unchanged(0, 0, 0)
        """The patches of every call so far, and those passed through unchanged."""
        self._lock = threading.Lock()

    @classmethod
    def fit(
        cls,
        images: npt.ArrayLike,
        *,
        od_threshold: float = DEFAULT_OD_THRESHOLD,
        source: str | None = None,
        warn: bool = True,
    ) -> StainNormaliser:
        """A normaliser to the stains of ``images`` (one patch or a batch, pooled)."""
        stains = fit_stains(images, od_threshold=od_threshold)
        if source is None:
            count = 1 if np.ndim(images) == 3 else len(np.asarray(images))
            source = f"{count} reference patch" + ("" if count == 1 else "es")
        return cls(stains, source=source, od_threshold=od_threshold, warn=warn)

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, fit: FitMode = "error", warn: bool = True
    ) -> StainNormaliser:
        """A normaliser from a saved reference (``.json``), an image, or a folder of images.

        Images are read with :func:`pcam.data.patch_io.decode_patch` (``fit`` as there) and
        pooled into one fit. Every problem is a one-line :class:`pcam.errors.PCamError`.
        """
        from pcam.data.patch_io import decode_patch, image_files

        path = Path(path)
        if path.suffix.lower() == ".json":
            return cls._from_json(path, warn=warn)
        files = image_files([path])
        patches = np.stack([decode_patch(file, fit=fit)[0] for file in files])
        try:
            stains = fit_stains(patches)
        except BackgroundOnlyError as error:
            raise BackgroundOnlyError(error.found, DEFAULT_OD_THRESHOLD, path) from None
        except SingleStainError as error:
            raise SingleStainError(error.angle, path) from None
        noun = "image" if len(files) == 1 else "images"
        source = str(path) if path.is_file() else f"{path} ({len(files)} {noun})"
        return cls(stains, source=source, warn=warn)

    @classmethod
    def _from_json(cls, path: Path, *, warn: bool) -> StainNormaliser:
        """A normaliser from the JSON :meth:`save` wrote."""
        expected = "a Macenko reference written by pcam (JSON)"
        hint = "save it again, or pass the reference images instead"
        if not path.is_file():
            found = "a folder" if path.is_dir() else "no such file"
            raise MissingFileError(path, expected, "check the path", found=found)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UnreadableFileError(path, expected, f"invalid JSON ({error})", hint) from None
        normaliser = cls.from_dict(values, where=path, warn=warn)
        saved = values.get("source")  # a dict: from_dict checked
        normaliser.source = f"{path} (fitted on {saved})" if saved else str(path)
        return normaliser

    @classmethod
    def from_dict(
        cls, values: object, *, where: object = "stain reference", warn: bool = True
    ) -> StainNormaliser:
        """A normaliser from what :meth:`to_dict` gave (and :meth:`save` wrote).

        A value that is not such a dict is a one-line :class:`pcam.errors.LayoutError` naming
        ``where``.
        """
        expected = "a Macenko reference written by pcam (JSON)"
        hint = "save it again, or pass the reference images instead"
        if not isinstance(values, dict) or values.get("kind") != REFERENCE_KIND:
            kind = values.get("kind") if isinstance(values, dict) else type(values).__name__
            raise LayoutError(Path(str(where)), expected, f"kind {kind!r}", hint)
        try:
            stains = MacenkoStains.from_dict(values)
            od_threshold = float(values.get("od_threshold", DEFAULT_OD_THRESHOLD))
            _check_parameters(od_threshold, DEFAULT_ANGLE_PERCENTILE)
        except (InvalidArgumentError, TypeError, ValueError) as error:
            raise LayoutError(Path(str(where)), expected, f"a bad value ({error})", hint) from None
        saved = values.get("source")
        source = saved if isinstance(saved, str) and saved else "a saved reference"
        return cls(stains, source=source, od_threshold=od_threshold, warn=warn)

    def to_dict(self) -> dict[str, Any]:
        """What :meth:`save` writes: the kind, the stains, the threshold and the source."""
        return {
            "kind": REFERENCE_KIND,
            "method": "macenko",
            **self.reference.to_dict(),
            "od_threshold": self.od_threshold,
            "source": self.source,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the reference as JSON (atomically), for :meth:`from_path` to read back."""
        from pcam.outputs import write_json_atomically

        write_json_atomically(Path(path), self.to_dict())

    def __call__(self, images: npt.ArrayLike) -> ByteArray:
        """:func:`normalise` ``images`` to the reference (same shape, uint8).

        Counts the patches passed through in :attr:`unchanged`; warns only if :attr:`warn`.
        """
        result, unchanged = normalise_counted(
            images, self.reference, od_threshold=self.od_threshold
        )
        with self._lock:  # the web app calls one normaliser from several threads
            self.unchanged = self.unchanged + unchanged
        if self.warn and unchanged.count:
            warnings.warn(
                unchanged.message(self.od_threshold), StainNormalisationWarning, stacklevel=2
            )
        return result

    def unchanged_message(self) -> str | None:
        """One line on the patches passed through unchanged so far, or ``None`` if none were."""
        return self.unchanged.message(self.od_threshold) if self.unchanged.count else None

    def describe(self) -> str:
        """One line for the command line: ``Macenko stain normalisation to SOURCE``."""
        return f"Macenko stain normalisation to {self.source}"

    def __repr__(self) -> str:
        return f"StainNormaliser({self.source!r})"
