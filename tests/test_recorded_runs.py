"""The real-data path: recognising the q75 copy, timing a fit, recording runs (finished or stopped),
comparing bare steps, and the recorded CPU run and grid the book is built from."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from vitlib import data
from vitlib.cli import main
from vitlib.lab.book import chapter, evaluation
from vitlib.lab.results import ablation, comparison, grid, records, speed, tables
from vitlib.lab.book.recorded import CPU_RUN
from vitlib.support import cifar, run_folder

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "quick.yaml")
SMALL = ["--data.quick_train_size", "128", "--data.quick_test_size", "64", "--data.batch_size", "32"]
CPU_RECORD = REPO / "results" / f"{CPU_RUN}.json"


def _pixel_sha256(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.sha256(pickle.load(f, encoding="latin1")["data"].tobytes()).hexdigest()


def test_the_q75_copy_is_recognised_by_its_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cifar.make_synthetic_cifar100(tmp_path / "copy", n_train=64, n_test=32)
    assert cifar.identify_cifar100(root) == cifar.DatasetId.UNVERIFIED
    # The same check with this set's pixel hashes in place of the q75 copy's.
    folder = root / cifar.FOLDER
    monkeypatch.setattr(cifar, "Q75_PIXELS_SHA256", {s: _pixel_sha256(folder / s) for s in ("train", "test")})
    cifar._identify.cache_clear()
    assert cifar.identify_cifar100(root) == cifar.DatasetId.Q75
    # One changed pixel is no longer the copy.
    with open(folder / "test", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry["data"][0, 0] ^= 1
    with open(folder / "test", "wb") as f:
        pickle.dump(entry, f)
    assert cifar.identify_cifar100(root) == cifar.DatasetId.UNVERIFIED


def test_a_data_source_on_the_copy_names_it_and_reads_it_unverified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VITLIB_QUICK", raising=False)
    root = cifar.make_synthetic_cifar100(tmp_path / "copy", n_train=64, n_test=32)
    folder = root / cifar.FOLDER
    monkeypatch.setattr(cifar, "Q75_PIXELS_SHA256", {s: _pixel_sha256(folder / s) for s in ("train", "test")})
    cifar._identify.cache_clear()
    source = chapter.data_source(root, download=False)
    assert source.dataset is cifar.DatasetId.Q75 and source.caption == "CIFAR-100 (JPEG q75 copy)"
    assert source.datamodule().hparams.verify_md5 is False
    assert source.class_names[3] == "bear"
    assert chapter.DataSource(cifar.DatasetId.SYNTHETIC, None, "stripes").class_names[3] == "stripes 3"


def test_a_fit_records_its_speed_against_the_bare_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITLIB_QUICK", "1")
    main(["fit", "--config", QUICK, "--trainer.max_epochs", "2", *SMALL])
    run = tmp_path / "runs" / "vitlib" / "version_0"
    speed = json.loads((run / "metrics.json").read_text())["throughput"]
    assert speed["train_images"] == 2 * (128 // 32) * 32
    assert 0 < speed["train_s"] < speed["fit_wall_s"]
    assert speed["fit_images_per_s"] < speed["train_images_per_s"]  # set-up and validation cost time
    assert speed["bare_step_images_per_s"] > 0 and speed["train_vs_bare"] > 0
    assert speed["threads"] == torch.get_num_threads() and speed["resumed_from"] is None
    history = run_folder.read_history(run / "metrics.csv")
    assert [e for e, _ in history["time/train_epoch_s"]] == [0, 1] and len(history["lr"]) == 2


def test_a_stopped_run_is_recorded_only_when_asked_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cifar_root: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITLIB_QUICK", "1")
    main(["fit", "--config", QUICK, "--trainer.max_epochs", "2", *SMALL])
    run = tmp_path / "runs" / "vitlib" / "version_0"
    written = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()  # as if killed after its last epoch's validation
    with pytest.raises(FileNotFoundError, match="unfinished"):
        records.record_run(run, "stopped", tmp_path / "results", weights=False)
    with pytest.raises(ValueError, match="not a result"):  # still quick mode
        records.record_run(run, "stopped", tmp_path / "results", weights=False, unfinished=True)
    # The same run as if it had read real files: it ran its whole schedule, only metrics.json is
    # missing; its timing comes from the epochs' logged times, the same as the monitor's.
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"].update(quick=False, data_dir=str(cifar_root))
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.delenv("VITLIB_QUICK")
    record = records.Record.from_json(json.loads(records.record_run(run, "killed", tmp_path / "results", weights=False, unfinished=True).read_text()))
    assert record.stopped_early is None and record.epochs == 2
    assert record.metrics.top1 == pytest.approx(written["top1"])
    timing = record.throughput
    assert timing["train_images"] == written["throughput"]["train_images"] and timing["bare_step_images_per_s"] is None
    assert timing["train_s"] == pytest.approx(written["throughput"]["train_s"], rel=0.05)
    assert 0 < timing["train_s"] < timing["fit_wall_s"] <= written["throughput"]["fit_wall_s"]
    # With more epochs planned than it ran, it was stopped early and says so.
    config["trainer"]["max_epochs"] = 5
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    record = records.Record.from_json(json.loads(records.record_run(run, "stopped", tmp_path / "results", weights=False, unfinished=True).read_text()))
    assert record.stopped_early == "stopped after 2 of 5 epochs" and record.epochs == 2
    assert record.metrics.top1 == run_folder.read_history(run / "metrics.csv")["val/top1"][-1][1]
    assert record.dataset is cifar.DatasetId.UNVERIFIED
    assert "stopped after 2 of 5" in tables.tuning_table(tmp_path / "results")
    # Its last.ckpt is of its last epoch, so its weights may be recorded; a checkpoint that lags
    # behind the metrics (one epoch back here) is refused, and nothing is written.
    assert records.record_run(run, "with-weights", tmp_path / "results", unfinished=True).is_file()
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    checkpoint["epoch"] -= 1
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match="holds the weights after epoch 1 of the fit, its metrics go to epoch 2"):
        records.record_run(run, "lagging", tmp_path / "results", unfinished=True)
    assert not (tmp_path / "results" / "lagging.json").exists()


def test_bare_steps_of_variants_in_one_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "speed.json"
    speed.main(["--model", 'wide={"dim": 64, "depth": 1, "heads": 2}', "--model", 'narrow={"dim": 32, "depth": 1, "heads": 2}',
                     "--batch-size", "8", "--steps", "2", "--out", str(out)])  # fmt: skip
    payload = json.loads(out.read_text())
    wide, narrow = payload["rows"]
    assert wide["relative_to_first"] == 1.0 and narrow["images_per_s"] > 0
    assert wide["parameters"] > narrow["parameters"]
    assert payload["command"].startswith("python -m vitlib.lab.results.speed") and payload["threads"] >= 1
    assert "narrow" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        speed.main(["--model", 'bad={"dim": 65, "heads": 2}'])
    assert exit_info.value.code == 2


def test_fits_of_whole_configs_against_their_bare_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--fit runs a short real fit per config (here quick data) and reports the training images/s
    of its second epoch against the bare step of the same process; the table renders the file."""
    out = tmp_path / "speed" / "fit-speed.json"
    speed.main(["--fit", f"plain={REPO / 'configs' / 'cpu.yaml'}", "--fit", f"full={REPO / 'configs' / 'cpu_long.yaml'}", "--batches", "2",
                     "--out", str(out), "--data.quick", "true", "--data.batch_size", "16", "--model.overrides", '{"dim": 32, "depth": 1, "heads": 2}'])  # fmt: skip
    payload = json.loads(out.read_text())
    plain, full = payload["rows"]
    assert payload["kind"] == "fit" and payload["batches"] == 2 and payload["command"].startswith("python -m vitlib.lab.results.speed --fit")
    assert plain["augment"]["randaugment"] is False and full["augment"]["randaugment"] and full["mix"]["prob"] == 1.0
    for row in (plain, full):
        assert row["train_images_per_s"] > 0 and row["bare_step_images_per_s"] > 0
        assert row["train_vs_bare"] == pytest.approx(row["train_images_per_s"] / row["bare_step_images_per_s"])
    assert "full:" in capsys.readouterr().out
    table = tables.fit_speed_table(tmp_path / "speed")
    assert "RandAugment N=2 M=9, CutMix/MixUp p=1 (CutMix in 0.5 of them" in table and f"{full['train_vs_bare']:.0%}" in table
    assert "No bare-step comparison" in tables.bare_step_table(tmp_path / "speed")  # the two kinds stay apart
    with pytest.raises(SystemExit) as exit_info:
        speed.main(["--fit", f"missing={tmp_path / 'none.yaml'}"])
    assert exit_info.value.code == 2 and "no such config file" in capsys.readouterr().err


@pytest.mark.skipif(not CPU_RECORD.is_file(), reason="no recorded CPU run in results/")
def test_the_recorded_cpu_run_is_complete_and_its_weights_are_intact() -> None:
    recorded = records.load_record(CPU_RUN, REPO / "results", url=None)
    record = recorded.record
    assert record.dataset is cifar.DatasetId.Q75 and record.split == "val" and "test set" in record.images
    assert record.metrics.top1 >= 0.45 and record.metrics.samples == 10000
    # The recipe's budget is an hour of fit; a recorded run over it must say so in its record.
    assert record.throughput["fit_wall_s"] <= 3600 or "over the 60-minute budget" in (record.note or "")
    assert record.resumed_from is None and record.stopped_early is None
    epochs = record.epochs
    assert [e for e, _ in recorded.history["val/top1"]] == list(range(epochs))
    assert recorded.history["val/top1"][-1][1] == pytest.approx(record.metrics.top1)
    model = recorded.model()  # checks the weights' SHA-256
    assert model.cfg.to_dict() == json.loads((REPO / "results" / CPU_RUN / "config.json").read_text())


LONG_RUN = "cpu-long"
LONG_RECORD = REPO / "results" / f"{LONG_RUN}.json"


def _within(expected: object, actual: object, where: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected`` (every key of a dict of ``expected`` must be
    there with the same value; ``actual`` may have more, e.g. defaults Lightning wrote out)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [d for key, value in expected.items() for d in _within(value, actual.get(key, "<missing>"), f"{where}.{key}")]
    return [] if expected == actual else [f"{where}: {expected!r} in the config, {actual!r} in the record"]


@pytest.mark.skipif(not LONG_RECORD.is_file(), reason="the long CPU run of the recipe is not recorded in results/")
def test_the_long_run_ran_its_config_and_its_record_agrees_with_itself() -> None:
    """configs/cpu_long.yaml is the config the long run ran, key for key; its record holds every
    epoch once, its final metrics are its last epoch's (on the test split, read once, never a
    best epoch), and the committed weights load (their SHA-256 checked)."""
    recorded = records.load_record(LONG_RUN, REPO / "results", url=None)
    record = recorded.record
    config = yaml.safe_load((REPO / "configs" / "cpu_long.yaml").read_text())
    differences = [d for section in ("model", "data") for d in _within(config[section], getattr(record, section), section)]
    differences += _within({k: v for k, v in config["trainer"].items() if k in record.trainer}, record.trainer, "trainer")
    assert not differences, differences
    assert record.data["augment"]["randaugment"] and record.data["mix"]["prob"] > 0
    assert record.model["schedule"]["name"] == "cyclic"
    assert record.dataset is cifar.DatasetId.Q75 and record.split == "val" and "test set" in record.images
    assert record.metrics.samples == 10000 and record.size["parameters"] <= 1_000_000
    epochs = record.epochs
    assert epochs == config["trainer"]["max_epochs"] or record.stopped_early
    for key in ("val/top1", "train/top1", "time/train_epoch_s", "lr"):
        assert [e for e, _ in recorded.history[key]] == list(range(epochs)), key
    assert recorded.history["val/top1"][-1][1] == pytest.approx(record.metrics.top1)
    assert record.throughput["train_s"] == pytest.approx(sum(v for _, v in recorded.history["time/train_epoch_s"]))
    if record.resumes:
        assert len(record.throughput["parts"]) == record.resumes + 1
    assert recorded.model().cfg.to_dict() == json.loads((REPO / "results" / LONG_RUN / "config.json").read_text())


def _q75_root() -> Path | None:
    for root in (REPO / "data-q75",):
        if (root / cifar.FOLDER / "meta").is_file() and cifar.identify_cifar100(root) == cifar.DatasetId.Q75:
            return root
    return None


@pytest.mark.parametrize("name", [CPU_RUN, LONG_RUN])
def test_the_recorded_weights_evaluate_to_the_recorded_top1(name: str) -> None:
    if not (REPO / "results" / f"{name}.json").is_file():
        pytest.skip(f"{name} is not recorded in results/")
    root = _q75_root()
    if root is None:
        pytest.skip("the CIFAR-100 q75 copy is not built in data-q75/ (make book builds it from ../shared)")
    recorded = records.load_record(name, REPO / "results", url=None)
    datamodule = data.CIFAR100DataModule(str(root), batch_size=500, num_workers=0, verify_md5=False, download=False, quick=False)
    datamodule.setup("test")
    probs, labels = evaluation.predict(recorded.model(), datamodule.test_dataloader())
    top1 = float((probs.argmax(dim=1) == labels).float().mean())
    top5 = float((probs.topk(5, dim=1).indices == labels[:, None]).any(dim=1).float().mean())
    # The same images and weights: equal up to float summation order (a few images at most).
    assert top1 == pytest.approx(recorded.metrics.top1, abs=3e-4)
    assert top5 == pytest.approx(recorded.metrics.top5, abs=3e-4)


GRID = REPO / grid.FOLDER


@pytest.mark.skipif(not GRID.is_dir(), reason="no recorded grid in results/grid/")
def test_the_recorded_grid_is_complete_comparable_and_intact() -> None:
    runs = {r.name: r for r in grid.load(GRID)}
    missing = [grid.run_name(*run) for run in grid.planned_runs(runs) if grid.run_name(*run) not in runs]
    assert not missing, f"grid runs not recorded: {missing}"
    # One recipe: the same epochs, data, trunk and schedule everywhere; only stem, attention, seed vary.
    assert {r.epochs for r in runs.values()} == {runs["patch-mhsa-seed0"].epochs}
    assert {r.dataset for r in runs.values()} == {cifar.DatasetId.Q75}
    trunks = {json.dumps({k: v for k, v in r.model["overrides"].items() if k not in ("stem", "attention")}, sort_keys=True) for r in runs.values()}
    assert len(trunks) == 1 and len({json.dumps(r.model["schedule"], sort_keys=True) for r in runs.values()}) == 1
    for name, record in runs.items():
        stem, attention, seed = name.split("-")
        overrides = record.model["overrides"]
        assert (overrides["stem"], overrides["attention"]) == (stem, attention)
        assert f"--seed_everything {seed.removeprefix('seed')} " in record.command
        assert record.stopped_early is None and record.resumed_from is None
        assert record.size["parameters"] > 0 and record.throughput["fit_wall_s"] > 0
        recorded = records.load_record(name, GRID, url=None)
        assert recorded.history["val/top1"][-1][1] == pytest.approx(record.metrics.top1)
        model = recorded.model()  # checks the weights' SHA-256
        assert (model.cfg.stem, model.cfg.attention) == (stem, attention)
        assert sum(p.numel() for p in model.parameters()) == record.size["parameters"]


BASELINE = REPO / "results" / "cpu-resnet.json"


@pytest.mark.skipif(not BASELINE.is_file(), reason="the CNN baseline is not recorded in results/")
def test_the_cnn_baseline_ran_the_cpu_recipe_with_another_network_and_its_weights_evaluate() -> None:
    """configs/cpu_resnet.yaml is what the baseline ran; its recipe is the short ViT recipe's,
    key for key; its last epoch is its metrics; the committed weights are intact and, on the q75
    copy, evaluate to the recorded top-1."""
    from safetensors.torch import load_file

    from vitlib.lab.results.baseline import CIFARResNet, same_recipe
    from vitlib.support.pretrained import sha256_of

    record = records.Record.from_json(json.loads(BASELINE.read_text()))
    config = yaml.safe_load((REPO / "configs" / "cpu_resnet.yaml").read_text())
    differences = [d for section in ("model", "data") for d in _within(config[section], getattr(record, section), section)]
    assert not differences, differences
    assert same_recipe(record, records.load_record(CPU_RUN, REPO / "results", url=None).record)
    assert record.epochs == config["trainer"]["max_epochs"] and record.dataset is cifar.DatasetId.Q75
    history = record.history
    assert [e for e, _ in history["val/top1"]] == list(range(record.epochs))
    assert history["val/top1"][-1][1] == pytest.approx(record.metrics.top1)
    weights = REPO / "results" / record.weights["folder"] / "model.safetensors"
    assert sha256_of(weights) == record.weights["sha256"]
    model = CIFARResNet(**json.loads((weights.parent / "config.json").read_text()))
    model.load_state_dict(load_file(weights))  # strict: every tensor, right shapes
    assert sum(p.numel() for p in model.parameters()) == record.size["parameters"]
    root = _q75_root()
    if root is None:
        return  # the evaluation needs the q75 copy (make book builds it from ../shared)
    datamodule = data.CIFAR100DataModule(str(root), batch_size=500, num_workers=0, verify_md5=False, download=False, quick=False)
    datamodule.setup("test")
    probs, labels = evaluation.predict(model.eval(), datamodule.test_dataloader())
    # Measured: 8 of the 10,000 predictions differ from the run's own validation (the ViTs agree
    # within 3); the cause is not yet pinned down, so the bound is 10 images, not 3.
    assert float((probs.argmax(dim=1) == labels).float().mean()) == pytest.approx(record.metrics.top1, abs=1e-3)


@pytest.mark.parametrize("study", list(ablation.STUDIES.values()), ids=lambda s: f"{s.epochs} epochs")
def test_the_recipe_study_records_ran_their_arms_and_agree_with_themselves(study: ablation.Study) -> None:
    """Every recorded run of the recipe study ran its arm's own command, validated on held-out
    training images (never the test set), holds every epoch once, says whether it stopped before
    its end, and its committed weights load (their SHA-256 checked); a run recorded before its end
    still has the checkpoint it resumes from."""
    folder = REPO / study.folder
    runs = {r.name: r for r in ablation.load(folder)}
    if not runs:
        pytest.skip(f"no run of the {study.epochs}-epoch recipe study is recorded in {study.folder}/")
    planned = {run.name: run for run in study.plan({}, study.epochs, "data-q75", study.logs)}
    assert set(runs) <= set(planned), f"records outside the study's plan: {set(runs) - set(planned)}"
    for name, record in runs.items():
        assert record.command == planned[name].command, name
        assert record.dataset is cifar.DatasetId.Q75 and record.split == "val"
        assert record.images == f"{ablation.VAL_SPLIT} training images held out (seed 0)" and record.metrics.samples == ablation.VAL_SPLIT
        assert record.trainer["max_epochs"] == study.epochs
        epochs = record.epochs
        assert (epochs < study.epochs) == bool(record.stopped_early), name
        recorded = records.load_record(name, folder, url=None)
        for key in ("val/top1", "train/top1", "lr"):
            assert [e for e, _ in recorded.history[key]] == list(range(epochs)), (name, key)
        assert recorded.history["val/top1"][-1][1] == pytest.approx(record.metrics.top1)
        model = recorded.model()  # checks the weights' SHA-256
        assert sum(p.numel() for p in model.parameters()) == record.size["parameters"]
        if record.stopped_early:
            checkpoint = run_folder.resume_point(REPO / planned[name].root)
            assert checkpoint is not None, f"{name} stopped before its end and has no checkpoint under {planned[name].root} to resume from"
            assert torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"] >= epochs - 1


COMMITTED_RECORDS = sorted(p for p in (REPO / "results").rglob("*.json") if "metrics" in json.loads(p.read_text()))


@pytest.mark.parametrize("path", COMMITTED_RECORDS, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_every_committed_record_loads_through_record_and_writes_back_what_it_holds(path: Path) -> None:
    """Each results file, whatever format wrote it, loads as a typed Record; written back in the
    current format it keeps every value it had (and adds only the fields the old format lacked)."""
    payload = json.loads(path.read_text())
    record = records.Record.from_json(payload, path.name)
    assert record.dataset.real and isinstance(record.metrics.top1, float) and record.name == path.stem
    written = json.loads(json.dumps(record.to_json()))
    assert {key: written[key] for key in payload if key != "schema"} == {k: v for k, v in payload.items() if k != "schema"}
    assert written["schema"] == records.SCHEMA
    assert records.Record.from_json(written) == record


def test_a_record_with_an_unknown_field_or_a_newer_format_is_refused(make_record) -> None:
    payload = make_record(name="r").to_json()
    with pytest.raises(ValueError, match="r has unknown field\\(s\\) colour; .* add the field to Record"):
        records.Record.from_json({**payload, "colour": "red"})
    with pytest.raises(ValueError, match=f"format {records.SCHEMA + 1}; this vitlib reads up to {records.SCHEMA}"):
        records.Record.from_json({**payload, "schema": records.SCHEMA + 1})
    with pytest.raises(ValueError, match="metrics have unknown field\\(s\\) top10"):
        records.Record.from_json({**payload, "metrics": {"top1": 0.5, "top10": 0.9}})
    with pytest.raises(ValueError, match="lacks commit"):
        records.Record.from_json({k: v for k, v in payload.items() if k != "commit"})
