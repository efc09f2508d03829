"""CIFAR-100 data: label tables, the pickle layout, finding / extracting / reading, the DataModule."""

from __future__ import annotations

import dataclasses
import os
import pickle
import tarfile
import tempfile
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from PIL import Image
from torch.utils.data import DistributedSampler

from vitlib.augment import CIFAR100_MEAN, CIFAR100_STD, AugmentConfig, MixConfig, denormalize, soft_target_cross_entropy
from vitlib.data import CIFAR100DataModule, ImageFileDataset
from vitlib.support import cifar
from vitlib.support.cifar import (
    COARSE_LABELS,
    FINE_LABELS,
    FINE_TO_COARSE,
    DatasetNotFoundError,
    default_data_dir,
    load_cifar100,
    make_synthetic_cifar100,
    quick_mode,
    write_cifar100,
)

FOLDER = "cifar-100-python"


def read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def random_split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[int]]:
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, n).tolist()


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if a download is attempted."""

    def forbidden(root, verify_md5):
        raise AssertionError("no download expected")

    monkeypatch.setattr(cifar, "_download", forbidden)


# --------------------------------------------------------------------------- label tables


def test_label_tables_are_consistent():
    assert len(FINE_LABELS) == len(set(FINE_LABELS)) == 100
    assert len(COARSE_LABELS) == len(set(COARSE_LABELS)) == 20
    assert len(FINE_TO_COARSE) == 100
    # every superclass holds exactly five classes
    assert np.bincount(FINE_TO_COARSE, minlength=20).tolist() == [5] * 20
    assert FINE_LABELS[:4] == ["apple", "aquarium_fish", "baby", "bear"] and FINE_LABELS[-1] == "worm"


def test_label_tables_match_the_real_files(mini_root):
    meta = read_pickle(mini_root / FOLDER / "meta")
    assert meta["fine_label_names"] == FINE_LABELS
    assert meta["coarse_label_names"] == COARSE_LABELS
    pairs = set()
    for split in ("train", "test"):
        record = read_pickle(mini_root / FOLDER / split)
        pairs |= set(zip(record["fine_labels"], record["coarse_labels"]))
    assert {fine for fine, _ in pairs} == set(range(100))  # the mini set covers every class
    assert pairs == set(enumerate(FINE_TO_COARSE))


def test_normalisation_statistics_agree_with_real_images(mini_root):
    pixels = np.concatenate(
        [load_cifar100(mini_root, train, download=False, verify_md5=False).data for train in (True, False)]
    ).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(pixels.mean(0), CIFAR100_MEAN, atol=0.03)
    np.testing.assert_allclose(pixels.std(0), CIFAR100_STD, atol=0.03)


# --------------------------------------------------------------------------- writing the pickles


def test_written_files_read_back_exactly_through_torchvision(tmp_path):
    rng = np.random.default_rng(0)
    (train_x, train_y), (test_x, test_y) = random_split(rng, 7), random_split(rng, 5)
    assert write_cifar100(tmp_path, train_x, train_y, test_x, test_y) == tmp_path
    for train, images, labels in ((True, train_x, train_y), (False, test_x, test_y)):
        ds = load_cifar100(tmp_path, train, download=False, verify_md5=False)
        assert np.array_equal(ds.data, images) and ds.targets == labels
        assert ds.classes == FINE_LABELS
        image, label = ds[3]
        assert np.array_equal(np.asarray(image), images[3]) and label == labels[3]
        record = read_pickle(tmp_path / FOLDER / ("train" if train else "test"))
        assert record["coarse_labels"] == [FINE_TO_COARSE[y] for y in labels]
        # channel-planar rows: the 1024 red values row by row, then green, then blue
        assert np.array_equal(record["data"][2, 1024:2048], images[2, :, :, 1].ravel())
    meta = read_pickle(tmp_path / FOLDER / "meta")
    assert meta["coarse_label_names"] == COARSE_LABELS
    for name in ("train", "test", "meta"):
        assert (tmp_path / FOLDER / name).read_bytes()[:2] == b"\x80\x02"  # pickle protocol 2
    assert sorted(os.listdir(tmp_path / FOLDER)) == ["meta", "test", "train"]  # no temporary files left


def test_written_layout_is_the_original_layout(cifar_root, mini_root):
    for name in ("train", "test", "meta"):
        ours, real = read_pickle(cifar_root / FOLDER / name), read_pickle(mini_root / FOLDER / name)
        assert list(ours) == list(real)  # same keys, same order
        for key in real:
            assert type(ours[key]) is type(real[key]), key
            if isinstance(real[key], list):
                assert type(ours[key][0]) is type(real[key][0]), key
            if isinstance(real[key], np.ndarray):
                assert (ours[key].dtype, ours[key].shape[1:]) == (real[key].dtype, real[key].shape[1:])
        if name != "meta":
            assert ours["batch_label"] == real["batch_label"]


def test_write_rejects_bad_arrays(tmp_path):
    good = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="train_images must be uint8"):
        write_cifar100(tmp_path, np.zeros((2, 3, 32, 32), np.uint8), [0, 1], good, [0, 1])
    with pytest.raises(ValueError, match="test_fine has 1 labels"):
        write_cifar100(tmp_path, good, [0, 1], good, [0])
    with pytest.raises(ValueError, match="train_fine labels must be in"):
        write_cifar100(tmp_path, good, [0, 100], good, [0, 1])


def test_synthetic_data_is_deterministic_balanced_and_learnable(tmp_path, cifar_root):
    again = make_synthetic_cifar100(tmp_path / "a", n_train=512, n_test=256, seed=0)
    other = make_synthetic_cifar100(tmp_path / "b", n_train=512, n_test=256, seed=1)
    original = (cifar_root / FOLDER / "train").read_bytes()
    assert (again / FOLDER / "train").read_bytes() == original
    assert (other / FOLDER / "train").read_bytes() != original
    train = load_cifar100(cifar_root, True, download=False, verify_md5=False)
    test = load_cifar100(cifar_root, False, download=False, verify_md5=False)
    counts = np.bincount(train.targets, minlength=100)
    assert counts.max() - counts.min() <= 1
    # A nearest-class-mean colour classifier (6 numbers per image) already beats chance (1%) by far.
    def features(ds):
        x = ds.data.reshape(len(ds), -1, 3).astype(float)
        return np.concatenate([x.mean(1), x.std(1)], axis=1)

    train_f, test_f, y = features(train), features(test), np.array(train.targets)
    centroids = np.stack([train_f[y == c].mean(0) for c in range(100)])
    predicted = ((test_f[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == np.array(test.targets)).mean() > 0.3


# --------------------------------------------------------------------------- finding and reading


def test_real_mini_files_read_with_md5_off(mini_root):
    train = load_cifar100(mini_root, True, download=False, verify_md5=False)
    test = load_cifar100(mini_root, False, download=False, verify_md5=False)
    assert (len(train), len(test)) == (486, 916)
    assert train.data.dtype == np.uint8 and train.data.shape == (486, 32, 32, 3)
    assert train.classes == FINE_LABELS
    image, label = test[0]
    assert image.size == (32, 32) and FINE_LABELS[label] in train.classes


@pytest.mark.parametrize("which", ["mini", "synthetic"])
def test_md5_check_rejects_unofficial_files(which, request):
    root = request.getfixturevalue("mini_root" if which == "mini" else "cifar_root")
    with pytest.raises(DatasetNotFoundError, match="md5") as err:
        load_cifar100(root, True, download=False, verify_md5=True)
    assert str(root) in str(err.value) and "verify_md5=False" in str(err.value)


def test_missing_data_offline_names_the_path_and_the_ways_out(tmp_path, monkeypatch):
    root = tmp_path / "nowhere"

    def offline(root, verify_md5):
        root.mkdir(parents=True, exist_ok=True)
        (root / "cifar-100-python.tar.gz").write_bytes(b"partial")  # a download cut off halfway
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(cifar, "_download", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        load_cifar100(root, True)
    message = str(err.value)
    for needed in (str(root), "cifar-100-python.tar.gz", "VITLIB_DATA", "VITLIB_QUICK=1", "download failed"):
        assert needed in message
    assert not (root / "cifar-100-python.tar.gz").exists()  # the partial download is removed


def test_missing_data_without_download(tmp_path, no_download):
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        load_cifar100(tmp_path, False, download=False)


def make_archive(path: Path, source_root: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source_root / FOLDER, arcname=FOLDER)
    return path


def test_archive_is_extracted_and_read(tmp_path, cifar_root, no_download):
    make_archive(tmp_path / "cifar-100-python.tar.gz", cifar_root)
    ds = load_cifar100(tmp_path, True, verify_md5=False)  # download=True: the archive is used instead
    assert np.array_equal(ds.data, load_cifar100(cifar_root, True, download=False, verify_md5=False).data)
    assert sorted(os.listdir(tmp_path)) == ["cifar-100-python", "cifar-100-python.tar.gz"]


def test_truncated_archive_gives_a_clear_error_and_leaves_nothing(tmp_path, cifar_root, no_download):
    archive = make_archive(tmp_path / "cifar-100-python.tar.gz", cifar_root)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetNotFoundError, match="corrupt or truncated") as err:
        load_cifar100(tmp_path, True, verify_md5=False)
    assert str(archive) in str(err.value)
    assert os.listdir(tmp_path) == ["cifar-100-python.tar.gz"]


def test_archive_without_the_dataset_is_rejected(tmp_path, no_download):
    (tmp_path / "src" / FOLDER).mkdir(parents=True)
    (tmp_path / "src" / FOLDER / "readme.txt").write_text("not CIFAR")
    make_archive(tmp_path / "cifar-100-python.tar.gz", tmp_path / "src")
    with pytest.raises(DatasetNotFoundError, match="does not contain"):
        load_cifar100(tmp_path, True, verify_md5=False)
    assert not (tmp_path / FOLDER).exists()


def test_environment_switches(monkeypatch, tmp_path):
    for value, expected in (("1", True), ("TRUE", True), ("yes", True), ("0", False), ("", False), ("no", False)):
        monkeypatch.setenv("VITLIB_QUICK", value)
        assert quick_mode() is expected
    monkeypatch.delenv("VITLIB_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # not a checkout of the book: an installed package's ./data
    assert default_data_dir() == Path("data")
    checkout = tmp_path / "book"
    (checkout / "vitlib").mkdir(parents=True)
    (checkout / "vitlib" / "__init__.py").write_text("")
    (checkout / "_toc.yml").write_text("")
    (checkout / "notebooks").mkdir()
    monkeypatch.chdir(checkout / "notebooks")  # where a chapter runs: the checkout's data/, not notebooks/data
    assert default_data_dir() == checkout.resolve() / "data"
    assert CIFAR100DataModule().data_dir == checkout.resolve() / "data"  # the CLI's default too
    monkeypatch.setenv("VITLIB_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path


# --------------------------------------------------------------------------- DataModule


def datamodule(root: Path, **kwargs) -> CIFAR100DataModule:
    options = dict(data_dir=str(root), batch_size=64, num_workers=0, verify_md5=False, download=False)
    return CIFAR100DataModule(**{**options, **kwargs})


def test_datamodule_batches_and_validation_on_the_test_set(cifar_root):
    dm = datamodule(cifar_root, eval_batch_size=100)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert len(dm.train_dataloader()) == 512 // 64  # drop_last
    assert dm.val_set is dm.test_set and len(dm.val_set) == 256
    assert dm.num_classes == 100 and dm.classes == FINE_LABELS
    first, second = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    assert first[0].shape == (100, 3, 32, 32) and torch.equal(first[0], second[0])  # no randomness
    dm.setup("test")
    assert len(dm.test_dataloader().dataset) == 256


def test_val_split_holds_out_a_seeded_subset(cifar_root):
    def split(seed):
        dm = datamodule(cifar_root, val_split=50, seed=seed)
        dm.setup("fit")
        return dm, set(dm.train_set.indices), set(dm.val_set.indices)

    dm, train, val = split(0)
    assert len(val) == 50 and len(train) == 462 and not train & val and len(train | val) == 512
    assert split(0)[2] == val and split(1)[2] != val
    # held-out images go through the eval transform, on the same pixels as the training copy
    index = dm.val_set.indices[0]
    expected = dm.eval_transform(Image.fromarray(dm.train_set.dataset.data[index]))
    torch.testing.assert_close(dm.val_set[0][0], expected)
    assert dm.train_set.dataset.transform is dm.train_transform
    dm.setup("test")
    assert len(dm.test_set) == 256  # the test set stays whole


def test_datamodule_rejects_impossible_sizes(cifar_root):
    with pytest.raises(ValueError, match="val_split"):
        datamodule(cifar_root, val_split=512).setup("fit")
    with pytest.raises(ValueError, match="batch_size"):
        datamodule(cifar_root, batch_size=1024).setup("fit")


def test_quick_mode_writes_synthetic_data_once(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("VITLIB_QUICK", "1")
    dm = CIFAR100DataModule(batch_size=32, num_workers=0, quick_train_size=128, quick_test_size=64)
    assert dm.quick and dm.quick_root.parent == tmp_path
    dm.prepare_data()
    dm.setup("fit")  # verify_md5=True is ignored for synthetic data
    assert (len(dm.train_set), len(dm.val_set)) == (128, 64)
    stamp = (dm.quick_root / FOLDER / "train").stat().st_mtime_ns
    again = CIFAR100DataModule(batch_size=32, num_workers=0, quick_train_size=128, quick_test_size=64)
    again.setup("fit")
    assert (again.quick_root / FOLDER / "train").stat().st_mtime_ns == stamp  # reused, not rewritten


class Recorder(L.LightningModule):
    """Records the target each step receives."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3 * 32 * 32, 100)
        self.seen: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}

    def _step(self, stage: str, batch) -> torch.Tensor:
        images, target = batch
        self.seen[stage].append(target)
        return soft_target_cross_entropy(self.layer(images.flatten(1)), target)

    def training_step(self, batch, batch_idx):
        return self._step("train", batch)

    def validation_step(self, batch, batch_idx):
        self._step("val", batch)

    def test_step(self, batch, batch_idx):
        self._step("test", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("mix", [MixConfig(), None])
def test_mixing_happens_only_in_training(cifar_root, mix):
    dm = datamodule(cifar_root, mix=mix)
    model = Recorder()
    trainer = L.Trainer(accelerator="cpu", fast_dev_run=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    for target in model.seen["train"]:
        if mix is None:
            assert target.dtype == torch.int64 and target.shape == (64,)
        else:
            assert target.dtype == torch.float32 and target.shape == (64, 100)
            torch.testing.assert_close(target.sum(1), torch.ones(64))
    for stage in ("val", "test"):
        assert model.seen[stage] and all(t.dtype == torch.int64 and t.ndim == 1 for t in model.seen[stage])


def test_ddp_eval_loaders_cover_every_sample_once(cifar_root):
    dm = datamodule(cifar_root, val_split=45, eval_batch_size=8)  # 45 is odd: padding would repeat one
    dm.setup("fit")
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        loader = dm.val_dataloader()
        assert isinstance(loader.sampler, DistributedSampler)  # so Lightning keeps it
        seen += list(loader.sampler)
    assert sorted(seen) == list(range(45))


def test_datamodule_builds_from_its_type_hints():
    parser = ArgumentParser()
    parser.add_class_arguments(CIFAR100DataModule, "data")
    args = ["--data.augment=null", "--data.mix.prob=0.25", "--data.quick=true", "--data.num_workers=0"]
    cfg = parser.parse_args(args)
    dm = parser.instantiate(cfg).data
    assert dm.hparams.augment is None and dm.mixer.cfg.prob == 0.25 and dm.quick
    # Plain values, so that checkpoints load with torch.load(weights_only=True).
    assert CIFAR100DataModule().hparams.augment == dataclasses.asdict(AugmentConfig())


# --------------------------------------------------------------------------- prediction on files


@pytest.fixture
def predict_files(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    names = ("rgba.png", "grey.png", "big.jpg", "palette.png", "halves.png", "notes.txt", "empty.png", "missing.jpg")
    files = {name: tmp_path / name for name in names}
    Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)).save(files["rgba.png"])
    Image.fromarray(rng.integers(0, 256, (64, 20), dtype=np.uint8)).save(files["grey.png"])
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(files["big.jpg"], quality=90)
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).convert("P").save(files["palette.png"])
    halves = np.zeros((32, 64, 3), np.uint8)  # wide: left half red, right half blue
    halves[:, :32, 0] = halves[:, 32:, 2] = 255
    Image.fromarray(halves).save(files["halves.png"])
    files["notes.txt"].write_text("not an image\n")
    files["empty.png"].touch()
    files["folder"] = tmp_path / "folder"
    files["folder"].mkdir()
    return files


def test_predict_dataset_reads_any_image_and_reports_bad_files(predict_files):
    ds = ImageFileDataset([str(p) for p in predict_files.values()])
    items = {Path(item["path"]).name: item for item in (ds[i] for i in range(len(ds)))}
    for name in ("rgba.png", "grey.png", "big.jpg", "palette.png", "halves.png"):
        assert items[name]["error"] == ""
        assert items[name]["image"].shape == (3, 32, 32) and items[name]["image"].dtype == torch.float32
    problems = {"notes.txt": "not a readable image", "empty.png": "empty file", "missing.jpg": "no such file",
                "folder": "is a directory"}  # fmt: skip
    for name, problem in problems.items():
        error = items[name]["error"]
        assert str(predict_files[name]) in error and problem in error and "\n" not in error
        assert torch.equal(items[name]["image"], torch.zeros(3, 32, 32))
    # shorter side to 32 then a centre crop: the middle 32 of 64 columns, half red, half blue
    pixels = denormalize(items["halves.png"]["image"])
    assert (pixels[0, :, :14] > 0.9).all() and (pixels[2, :, 18:] > 0.9).all()
    assert (pixels[2, :, :14] < 0.1).all() and (pixels[0, :, 18:] < 0.1).all()


def test_predict_dataloader_batches_paths_and_errors(cifar_root, predict_files):
    paths = [str(predict_files[name]) for name in ("big.jpg", "missing.jpg", "grey.png")]
    dm = datamodule(cifar_root, predict_files=paths, eval_batch_size=4)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["path"] == paths
    assert [bool(e) for e in batch["error"]] == [False, True, False]
    with pytest.raises(ValueError, match="predict_files"):
        datamodule(cifar_root).setup("predict")
