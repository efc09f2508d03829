"""vitlib.lab.book.chapter (what the notebooks run on), vitlib.measure and the book's figure helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from vitlib import ViT, ViTConfig, count_parameters, measure, rollout  # noqa: E402
from vitlib.augment import AugmentConfig, MixConfig, firing_rates  # noqa: E402
from vitlib.lab.book import chapter, evaluation, figures, recorded
from vitlib.lab.results import ablation, records
from vitlib.support import cifar
from vitlib.patching import PatchEmbedding  # noqa: E402
from vitlib.stems import ConvStem, ShiftedPatchTokenization  # noqa: E402


@pytest.fixture
def no_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITLIB_QUICK", raising=False)
    monkeypatch.delenv("VITLIB_DATA", raising=False)


# --------------------------------------------------------------------------- the data source


def test_quick_mode_gives_synthetic_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITLIB_QUICK", "1")
    source = chapter.data_source()
    assert source.dataset is cifar.DatasetId.SYNTHETIC and source.quick
    assert "synthetic data (quick mode)" in source.caption


def test_files_that_fail_the_md5_are_a_subset(no_quick: None, cifar_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITLIB_DATA", str(cifar_root))
    source = chapter.data_source(download=False)
    assert source.dataset is cifar.DatasetId.UNVERIFIED and source.root == cifar_root.resolve()
    assert "unverified" in source.caption and str(cifar_root) not in source.caption
    datamodule = source.datamodule()
    assert datamodule.hparams.verify_md5 is False and datamodule.quick is False
    images, labels = chapter.examples(source, count=6)
    assert images.shape == (6, 3, 32, 32) and 0.0 <= images.min() and images.max() <= 1.0
    assert len(set(labels.tolist())) == 6  # one image per class while the split has enough classes


def test_no_dataset_falls_back_to_synthetic_and_says_why(no_quick: None, tmp_path: Path) -> None:
    source = chapter.data_source(tmp_path / "empty", download=False)
    assert source.dataset is cifar.DatasetId.SYNTHETIC
    # Says why, without printing a path of this machine into the book.
    assert "no CIFAR-100 found" in source.caption and str(tmp_path) not in source.caption


def test_data_source_rejects_what_is_no_dataset_and_real_data_without_a_folder() -> None:
    with pytest.raises(ValueError, match="DataSource.dataset must be"):
        chapter.DataSource("imagenet", None, "")
    with pytest.raises(ValueError, match="DataSource.root is required"):
        chapter.DataSource(cifar.DatasetId.Q75, None, "")


def test_a_dataset_is_named_by_its_label_and_an_unknown_label_says_what_is_known() -> None:
    assert cifar.DatasetId.of("CIFAR-100 (JPEG q75 copy)") is cifar.DatasetId.Q75 and not cifar.DatasetId.SYNTHETIC.real
    with pytest.raises(ValueError, match="unknown dataset 'ImageNet': one of 'CIFAR-100 \\(official"):
        cifar.DatasetId.of("ImageNet")


def test_the_demonstration_budget_is_seconds_of_a_tiny_model_and_one_lr_triangle() -> None:
    budget = chapter.training_budget(max_epochs=6)
    assert budget.preset == "vit_tiny" and budget.max_epochs == 6
    assert budget.schedule.name == "cyclic" and 2 * budget.schedule.half_cycle_epochs == 6  # ends at the low rate
    kwargs = budget.trainer_kwargs()
    assert kwargs["limit_train_batches"] == budget.limit_train_batches and kwargs["precision"] == "32-true"
    assert "not a result" in budget.describe()


def test_predict_runs_batches_on_the_chosen_device_without_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch meets the model on the device (the GPU by default when there is one), under
    inference mode; the probabilities come back on the CPU and the model as it was."""
    seen: list[tuple[str, bool]] = []

    class Probe(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((x.device.type, torch.is_inference_mode_enabled()))
            return super().forward(x.flatten(1))

    model = Probe(12, 100).train()
    batches = [(torch.randn(4, 3, 2, 2), torch.arange(4)), (torch.randn(2, 3, 2, 2), torch.arange(2))]
    monkeypatch.setattr(evaluation, "device", lambda: torch.device("cpu"))
    probs, labels = evaluation.predict(model, batches)
    assert seen == [("cpu", True)] * 2 and model.training and not probs.is_inference()
    assert probs.shape == (6, 100) and probs.device.type == "cpu" and labels.tolist() == [0, 1, 2, 3, 0, 1]
    asked: list[torch.device] = []
    monkeypatch.setattr(evaluation, "device", lambda: asked.append(torch.device("cpu")) or torch.device("cpu"))
    evaluation.predict(model, batches)
    assert len(asked) == 1  # the default device is asked for, not assumed


def test_superclass_confusion_counts_coarse_pairs() -> None:
    from vitlib.support.cifar import FINE_TO_COARSE

    labels = torch.tensor([0, 1, 2])  # apple, aquarium_fish, baby
    predicted = torch.tensor([57, 1, 3])  # pear (same superclass as apple), right, bear (wrong superclass)
    matrix = evaluation.superclass_confusion(torch.nn.functional.one_hot(predicted, 100).float(), labels)
    assert matrix.sum() == 3
    assert matrix[FINE_TO_COARSE[0], FINE_TO_COARSE[57]] == 1 and FINE_TO_COARSE[0] == FINE_TO_COARSE[57]
    assert matrix[FINE_TO_COARSE[2], FINE_TO_COARSE[3]] == 1


def _fake_checkout(root: Path) -> None:
    (root / "vitlib").mkdir(parents=True)
    (root / "vitlib" / "__init__.py").write_text("")
    (root / "_toc.yml").write_text("")


def test_the_notebooks_read_the_data_folder_the_cli_reads(no_quick: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitlib.support.cifar import default_data_dir, make_synthetic_cifar100

    _fake_checkout(tmp_path)
    make_synthetic_cifar100(tmp_path / "data", n_train=100, n_test=100)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    source = chapter.data_source(download=False)
    assert source.dataset is cifar.DatasetId.UNVERIFIED and source.root == default_data_dir() == tmp_path.resolve() / "data"


def test_recorded_run_is_found_from_a_notebook_folder_of_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_record
) -> None:
    from vitlib import save_pretrained
    from vitlib.support.pretrained import WEIGHTS_NAME, sha256_of

    _fake_checkout(tmp_path)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where a chapter runs
    monkeypatch.setattr(records, "RECORDS_URL", None)  # no download in a test
    assert recorded.run("tiny") is None
    model = ViT(ViTConfig.from_preset("vit_tiny"))
    folder = save_pretrained(model, tmp_path / "results" / "tiny")
    record = make_record(name="tiny", metrics={"top1": 0.5}, weights={"sha256": sha256_of(folder / WEIGHTS_NAME)})
    (tmp_path / "results" / "tiny.json").write_text(json.dumps(record.to_json()))
    found = recorded.run("tiny")
    assert found is not None and found.metrics.top1 == 0.5
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in found.model().state_dict().items())


def test_receptive_fields_of_the_stems() -> None:
    assert measure.receptive_field(PatchEmbedding(3, 8, 4)) == 4
    assert measure.receptive_field(ConvStem(3, 8, 4)) == 7  # 3x3/2 then 3x3/2: 1 + 2 + 2*2
    assert measure.receptive_field(ConvStem(3, 8, 8)) == 15  # one more: + 2*4
    assert measure.receptive_field(ShiftedPatchTokenization(3, 8, 4)) == 8


def test_flops_count_multiply_adds_twice() -> None:
    layer = torch.nn.Linear(10, 7)
    assert measure.flops(layer, torch.zeros(3, 10)) == 2 * 3 * 10 * 7
    small, deep = ViT(ViTConfig.from_preset("vit_tiny")), ViT(ViTConfig.from_preset("vit_tiny", depth=4))
    assert measure.model_flops(deep) > measure.model_flops(small)


def test_parameter_breakdown_adds_up() -> None:
    for pool in ("cls", "mean"):
        model = ViT(ViTConfig.from_preset("vit_tiny", pool=pool))
        assert sum(measure.parameter_breakdown(model).values()) == count_parameters(model)


def test_stem_summary_row() -> None:
    row = measure.stem_summary(ViTConfig.from_preset("conv_vit"))
    assert row["stem"] == "conv" and row["tokens"] == 64 and row["receptive field (px)"] == 7
    assert row["parameters"] == count_parameters(ConvStem(3, 192, 4))


# --------------------------------------------------------------------------- augmentation rates


def test_firing_rates_follow_the_configs() -> None:
    rates = firing_rates(AugmentConfig(crop_padding=1, randaugment_ops=1), MixConfig(prob=0.5, cutmix_prob=0.25))
    assert rates["random crop moves the image"] == pytest.approx(1 - 1 / 9)
    assert rates["RandAugment changes the image (>= 1 non-identity op)"] == pytest.approx(13 / 14)
    assert rates["batch mixed by CutMix"] == pytest.approx(0.125)
    assert rates["batch mixed by MixUp"] == pytest.approx(0.375)
    assert firing_rates(None, None) == {}


# --------------------------------------------------------------------------- figures


def test_patch_and_position_figures() -> None:
    image = torch.rand(3, 32, 32)
    fig = figures.plot_patches(image, 4)
    assert len(fig.axes) == 3
    figures.caption(fig, "synthetic data (quick mode)")
    assert fig._supxlabel.get_text().startswith("synthetic data")
    pos = torch.randn(65, 16)
    fig = figures.plot_position_similarity(pos, has_cls_token=True)
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.shape == (8 * 9 - 1, 8 * 9 - 1)
    assert mosaic[0, 0] == pytest.approx(1.0)  # a position is identical to itself


def test_conv_stem_stages_and_feature_maps() -> None:
    stem = ConvStem(3, 32, 4).train()
    stages = figures.conv_stem_stages(stem, torch.rand(3, 32, 32))
    assert [tuple(t.shape) for _, t in stages] == [(16, 16, 16), (32, 8, 8), (32, 8, 8)]
    assert stem.training  # mode restored
    fig = figures.plot_feature_maps(torch.rand(3, 32, 32), stages, channels=4)
    assert len(fig.axes) == 3 * 5


def test_mixed_batch_titles_show_the_two_largest_weights() -> None:
    targets = torch.zeros(2, 100)
    targets[0, 3], targets[0, 7] = 0.7, 0.3
    targets[1, 5] = 1.0
    classes = [f"c{i}" for i in range(100)]
    fig = figures.plot_mixed_batch(torch.rand(2, 3, 32, 32), targets, classes)
    assert [ax.get_title() for ax in fig.axes] == ["c3 0.70\nc7 0.30", "c5 1.00"]


def test_sharpness_is_zero_for_uniform_attention() -> None:
    uniform = [torch.full((1, 2, 5, 5), 0.2)]
    entropy = rollout.attention_entropy(uniform)
    fig = figures.plot_sharpness({"uniform": entropy}, 5)
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx([0.0], abs=1e-6)
    assert math.log(5) == pytest.approx(float(entropy.mean()))


def test_lsa_uniform_attention_is_measured_against_the_tokens_it_can_attend_to() -> None:
    # LSA masks the diagonal: uniform attention over the other N - 1 tokens has entropy log(N - 1),
    # so it must read as 0 (not as sharper than uniform against log N).
    n = 5
    lsa_uniform = torch.full((1, 2, n, n), 1 / (n - 1)) * (1 - torch.eye(n))
    mhsa_uniform = torch.full((1, 2, n, n), 1 / n)
    cfg = ViTConfig.from_preset("vit_tiny")
    assert rollout.attendable_tokens(cfg.replace(attention="lsa")) == cfg.num_tokens - 1
    assert rollout.attendable_tokens(cfg) == cfg.num_tokens
    entropies = {"lsa": rollout.attention_entropy([lsa_uniform]), "mhsa": rollout.attention_entropy([mhsa_uniform])}
    fig = figures.plot_sharpness(entropies, {"lsa": n - 1, "mhsa": n})
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx([0.0, 0.0], abs=1e-6)
    # Against log N the LSA model would look sharper than uniform by log(N / (N - 1)).
    wrong = figures.plot_sharpness(entropies, n)
    assert wrong.axes[0].patches[0].get_height() == pytest.approx(math.log(n / (n - 1)), abs=1e-6)


def test_rollout_heatmaps_and_comparison() -> None:
    torch.manual_seed(0)
    model = ViT(ViTConfig.from_preset("vit_tiny"))
    probs, heat = rollout.rollout_heatmaps(model, torch.randn(3, 3, 32, 32))
    assert probs.shape == (3, 100) and heat.shape == (3, 8, 8)
    # Units of the uniform share: the rollout row over the 64 patches (the class token keeps some
    # weight itself) averages just under 1 (float32 sums may round it a hair over).
    assert 0.5 < float(heat.mean()) <= 1.0 + 1e-6
    fig = figures.plot_attention_comparison(torch.rand(3, 3, 32, 32), {"a": heat, "b": heat})
    assert len(fig.axes) == 6 + 1  # and one colour bar


def test_training_curves_and_confusion() -> None:
    history = {"train/loss": [(0, 4.0), (1, 3.5)], "val/loss": [(0, 4.1), (1, 3.9)], "val/top1": [(0, 0.1), (1, 0.2)]}
    fig = figures.plot_training_curves(history)
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(acc_ax.lines) == 1
    fig = figures.plot_confusion(torch.tensor([[3, 1], [0, 0]]), ["a", "b"])
    rates = fig.axes[0].images[0].get_array()
    assert rates[0, 0] == pytest.approx(0.75) and rates[1].sum() == 0  # an empty row stays 0, not NaN


def test_run_curves_give_each_model_one_colour_and_each_seed_one_line() -> None:
    seed = {"train/loss": [(0, 4.0), (1, 3.5)], "val/top1": [(0, 0.1), (1, 0.2)]}
    fig = figures.plot_run_curves({"patch": [seed, seed, seed], "conv": [seed]})
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 4 and len(acc_ax.lines) == 4
    assert loss_ax.lines[0].get_color() == loss_ax.lines[2].get_color() != loss_ax.lines[3].get_color()
    (legend,) = fig.legends  # one legend for the figure, below its panels
    assert [t.get_text() for t in legend.get_texts()] == ["patch (3 seeds)", "conv (1 seed)"]


def test_grid_runs_come_from_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorded, "repository_root", lambda: tmp_path)
    assert recorded.grid_runs() == [] and recorded.grid_run("conv", "lsa") is None
    folder = tmp_path / "results" / "grid"
    folder.mkdir(parents=True)
    record = {"name": "conv-lsa-seed0", "command": "c", "commit": "x", "hardware": "CPU", "date": "2026-12-02",
              "dataset": "CIFAR-100 (JPEG q75 copy)", "metrics": {"top1": 0.3}}  # fmt: skip
    (folder / "conv-lsa-seed0.json").write_text(json.dumps(record))
    assert [r.name for r in recorded.grid_runs()] == ["conv-lsa-seed0"]
    run = recorded.grid_run("conv", "lsa")
    assert run is not None and run.metrics.top1 == 0.3 and run.weights_location == str(folder / "conv-lsa-seed0")


def test_without_a_checkout_comparison_records_are_fetched_run_by_run(monkeypatch: pytest.MonkeyPatch, make_record) -> None:
    """Outside a checkout (Colab) the study's runs are fetched by name from the repository's URL;
    the grid's plan grows once its first six are in (the best cell's repeats)."""
    monkeypatch.setattr(recorded, "repository_root", lambda: None)
    asked: list[str] = []

    def fetch(name: str, folder: object, url: str) -> records.RecordedRun | None:
        asked.append(f"{url}{name}")
        top1 = {"spt-lsa-seed0": 0.4}.get(name, 0.3)
        record = make_record(name=name, date=name, metrics={"top1": top1})
        return None if name.startswith("no-mix") else records.RecordedRun(record, f"{url}{name}/")

    monkeypatch.setattr(recorded, "load_record", fetch)
    study = recorded.study_runs()
    assert sorted(r.name for r in study) == sorted(ablation.run_name(*run) for run in ablation.SHORT.runs if run[0] != "no-mix")
    assert all(a.startswith(f"{records.records_url()}ablation/") for a in asked)
    asked.clear()
    names = {r.name for r in recorded.grid_runs()}
    assert {"spt-lsa-seed1", "spt-lsa-seed2", "patch-mhsa-seed2"} <= names and len(names) == 10
    assert all(a.startswith(f"{records.records_url()}grid/") for a in asked)


def test_recipe_configs_ship_with_the_package() -> None:
    recipe = chapter.recipe_config("cpu_long")
    assert recipe["data"]["augment"]["randaugment"] and recipe["model"]["schedule"]["name"] == "cyclic"
    # The recipe ends on a cycle boundary, at base_lr: a whole number of (up + down) cycles.
    cycles = recipe["trainer"]["max_epochs"] / (2 * recipe["model"]["schedule"]["half_cycle_epochs"])
    assert cycles == int(cycles) >= 1
    assert chapter.recipe_config("cpu")["model"]["schedule"]["name"] == "cosine"
    assert chapter.recipe_config("no_such_recipe") is None


def test_the_data_note_warns_when_the_images_are_synthetic() -> None:
    synthetic = chapter.DataSource(cifar.DatasetId.SYNTHETIC, None, "synthetic stripes <not real>")
    note = chapter.data_note(synthetic)
    assert 'class="admonition warning"' in note and "Synthetic data, not CIFAR-100" in note
    assert "synthetic stripes &lt;not real&gt;" in note  # the caption is text, never markup
    real = chapter.data_note(chapter.DataSource(cifar.DatasetId.Q75, Path("data-q75"), "CIFAR-100 (JPEG q75 copy), test split"))
    assert 'class="admonition note"' in real and "warning" not in real and "CIFAR-100 (JPEG q75 copy)" in real


def test_mirror_similarity_finds_a_left_right_symmetric_embedding() -> None:
    torch.manual_seed(0)
    rows, distance = torch.randn(8, 32), torch.randn(4, 32)
    # Each position's embedding depends on its row and its distance from the vertical axis only.
    symmetric = torch.stack([rows[r] + distance[min(c, 7 - c)] for r in range(8) for c in range(8)])
    with_cls = torch.cat([torch.randn(1, 32), symmetric])
    found = rollout.mirror_similarity(with_cls, has_cls_token=True)
    assert found["left-right"] == pytest.approx(1.0, abs=1e-5)
    assert found["up-down"] < 0.9
    random = rollout.mirror_similarity(torch.randn(64, 32), has_cls_token=False)
    assert abs(random["left-right"]) < 0.1 and abs(random["up-down"]) < 0.1


def test_a_duration_reads_in_the_unit_a_reader_expects():
    assert [chapter.duration(s) for s in (48, 750, 14_112)] == ["48 s", "12.5 min", "3.9 h"]


def test_the_records_url_can_point_at_a_copy_and_a_missing_run_says_where_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:

    from vitlib.lab.results import records

    monkeypatch.delenv(records.RECORDS_ENV, raising=False)
    assert records.records_url() == records.RECORDS_URL
    monkeypatch.setenv(records.RECORDS_ENV, "http://127.0.0.1:9/results")
    assert records.records_url() == "http://127.0.0.1:9/results/"
    monkeypatch.setattr(recorded, "repository_root", lambda: None)
    message = recorded.missing("cpu-long")
    assert "no checkout" in message and "http://127.0.0.1:9/results/cpu-long.json" in message
    assert records.RECORDS_ENV in message and records.REPOSITORY_URL in message
    assert recorded.run("cpu-long") is None  # nothing listens on port 9: None, no traceback
    assert "http://127.0.0.1:9/results/grid/patch-mhsa-seed0.json" in recorded.missing("patch-mhsa-seed0", "results/grid")


def test_what_the_prediction_panels_and_the_confusion_show_is_read_from_them() -> None:
    from vitlib.support.cifar import COARSE_LABELS, FINE_LABELS

    woman, girl, bus = (FINE_LABELS.index(name) for name in ("woman", "girl", "bus"))
    assert evaluation.read_predictions([woman, girl, bus], [woman, woman, girl]) == (
        "1 of the 3 test images are named right at the first guess; a `woman` is taken for a `girl` (the same superclass, people); "
        "a `girl` is taken for a `bus` (another superclass, people against vehicles_1)."
    )
    assert evaluation.read_predictions([bus], [bus]) == "1 of the 1 test images are named right at the first guess."
    confusion = torch.zeros(len(COARSE_LABELS), len(COARSE_LABELS), dtype=torch.long)
    confusion.fill_diagonal_(10)
    confusion[3, 3], confusion[3, 7] = 4, 6  # class 3: worst, and most often taken for class 7
    confusion[5, 5], confusion[5, 1] = 8, 2
    said = evaluation.read_confusion(confusion, COARSE_LABELS, most=2)
    assert f"worst: {COARSE_LABELS[3]} (40%) and {COARSE_LABELS[5]} (80%)" in said
    assert f"The largest confusions: {COARSE_LABELS[3]} taken for {COARSE_LABELS[7]} (60%); {COARSE_LABELS[5]} taken for {COARSE_LABELS[1]} (20%)" in said


def test_the_notebooks_runs_go_where_vitlib_runs_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On Colab every chapter runs in its own runtime: a folder both reach (Drive) set in
    $VITLIB_RUNS is where chapter 6 writes its run and chapter 7 finds it."""
    monkeypatch.delenv(chapter.RUNS_ENV, raising=False)
    monkeypatch.setattr(chapter, "repository_root", lambda: tmp_path / "checkout")
    assert chapter.runs_root() == tmp_path / "checkout" / "runs" / "book"
    monkeypatch.setenv(chapter.RUNS_ENV, str(tmp_path / "drive"))
    assert chapter.runs_root() == tmp_path / "drive"
    monkeypatch.setenv(chapter.RUNS_ENV, "  ")
    assert chapter.runs_root() == tmp_path / "checkout" / "runs" / "book"
