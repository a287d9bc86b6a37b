"""A state machine drives the real reader on real HDF5 files and compares every answer with an
in-memory NumPy model that is assumed to be perfect."""

from __future__ import annotations

import pickle
import shutil
import tempfile

import numpy as np
import numpy.typing as npt
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pcam.data.reader import EpochReader, StreamOptions
from pcam.data.split import PCamSplit, open_split
from pcam.testing.strategies import SplitSpec, split_specs, write_spec
from tests.profiles import examples


def _patch_index(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    first = images[:, 0, 0].astype(np.int64)
    return first[:, 0] + 256 * first[:, 1] + 65536 * first[:, 2]


class ReaderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="pcam-stateful-")
        self.images: npt.NDArray[np.uint8] = np.empty((0, 96, 96, 3), np.uint8)
        self.labels: npt.NDArray[np.uint8] = np.empty(0, np.uint8)
        self.split: PCamSplit | None = None
        self.reader: EpochReader | None = None
        self.epochs_seen: dict[int, list[int]] = {}
        self.batches_seen: dict[tuple[int, int], list[int]] = {}

    @initialize(
        spec=split_specs(min_size=1, max_size=120),
        batch_size=st.integers(1, 40),
        shuffle=st.booleans(),
        seed=st.integers(0, 99),
        block=st.sampled_from([1, 4, 32]),
        window=st.sampled_from([1, 16, 64]),
    )
    def open(
        self, spec: SplitSpec, batch_size: int, shuffle: bool, seed: int, block: int, window: int
    ) -> None:
        self.images, self.labels = write_spec(self.root, "train", spec)
        self.split = open_split(self.root, "train")
        options = StreamOptions(
            batch_size=batch_size, shuffle=shuffle, seed=seed, block_size=block, window_size=window
        )
        self.reader = EpochReader(self.split, options)

    @rule(data=st.data())
    def read_images(self, data: st.DataObject) -> None:
        assert self.split is not None
        n = len(self.labels)
        index = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=30)))
        np.testing.assert_array_equal(self.split.read_images(index), self.images[index])

    @rule(data=st.data())
    def read_slice(self, data: st.DataObject) -> None:
        assert self.split is not None
        n = len(self.labels)
        start = data.draw(st.integers(0, n))
        stop = data.draw(st.integers(start, n))
        np.testing.assert_array_equal(
            self.split.read_images(slice(start, stop)), self.images[start:stop]
        )

    @rule(epoch=st.integers(0, 3), data=st.data())
    def read_batch(self, epoch: int, data: st.DataObject) -> None:
        assert self.reader is not None
        step = data.draw(st.integers(0, self.reader.num_batches() - 1))
        images, labels = self.reader.read_batch(epoch, step)
        index = _patch_index(images)
        np.testing.assert_array_equal(images, self.images[index])
        np.testing.assert_array_equal(labels, self.labels[index])
        previous = self.batches_seen.setdefault((epoch, step), index.tolist())
        assert previous == index.tolist()  # a batch is the same whenever it is read

    @rule(epoch=st.integers(0, 3))
    def whole_epoch(self, epoch: int) -> None:
        assert self.reader is not None
        index = np.concatenate([_patch_index(im) for im, _ in self.reader.batches(epoch)])
        np.testing.assert_array_equal(np.sort(index), np.arange(len(self.labels)))
        if not self.reader.options.shuffle:
            np.testing.assert_array_equal(index, np.arange(len(self.labels)))
        previous = self.epochs_seen.setdefault(epoch, index.tolist())
        assert previous == index.tolist()  # an epoch is the same whenever it is read

    @precondition(lambda self: self.split is not None)
    @rule()
    def pickle_round_trip(self) -> None:
        assert self.reader is not None
        self.reader = pickle.loads(pickle.dumps(self.reader))
        self.split = self.reader.split

    @precondition(lambda self: self.split is not None)
    @rule()
    def close_files(self) -> None:
        assert self.split is not None
        self.split.close()

    @invariant()
    def facts_agree(self) -> None:
        if self.split is not None:
            assert len(self.split) == len(self.labels)
            np.testing.assert_array_equal(self.split.labels, self.labels)

    def teardown(self) -> None:
        if self.split is not None:
            self.split.close()
        shutil.rmtree(self.root, ignore_errors=True)


ReaderMachine.TestCase.settings = settings(
    max_examples=examples(25), stateful_step_count=12, deadline=None
)
TestReaderMachine = ReaderMachine.TestCase
