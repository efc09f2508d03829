"""The CNN baseline: He et al.'s CIFAR ResNet, trained by the same module and CLI as the ViTs."""

import pytest
import torch
from torch import nn

from vitlib.lab.results.baseline import CIFARResNet, ResNetModule, main, model_from_checkpoint
from vitlib.model import count_parameters
from vitlib.support.checkpoints import load_checkpoint


@pytest.mark.parametrize("depth", [20, 32])
def test_the_network_has_depth_weighted_layers_and_he_et_al_s_size(depth):
    model = CIFARResNet(depth)
    # 6n + 2 layers with weights: the 3x3 convolutions and the classifier (1x1 shortcuts do not count).
    layers = sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules()) + 1
    assert layers == depth
    # He et al. 2016, Table 6: 0.27 M (ResNet-20) and 0.46 M (ResNet-32) for 10 classes; 100 classes add 5,850.
    expected = {20: 0.27e6, 32: 0.46e6}[depth] + 90 * 65
    assert abs(count_parameters(model) - expected) / expected < 0.03
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("depth", [7, 33, 0, True, 32.0])
def test_a_depth_that_is_not_6n_plus_2_is_refused_by_name(depth):
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CIFARResNet(depth)


def test_norms_and_biases_are_not_decayed_convolutions_and_the_classifier_are():
    module = ResNetModule(20)
    groups = module.parameter_groups()
    decayed = {id(p) for p in groups[0]["params"]}
    for name, p in module.model.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1), name
    assert groups[1]["weight_decay"] == 0.0


def test_the_baseline_trains_with_the_packaged_config_and_its_checkpoint_rebuilds_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLIB_QUICK", "1")
    main(["fit", "--config", "cpu_resnet", "--model.depth", "8", "--trainer.max_epochs", "2",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    checkpoint = load_checkpoint(next(tmp_path.rglob("last.ckpt")))
    assert checkpoint["hyper_parameters"]["depth"] == 8
    assert checkpoint["hyper_parameters"]["schedule"]["name"] == "cosine"  # cpu.yaml's schedule
    model = model_from_checkpoint(checkpoint)
    module = ResNetModule(8)
    module.load_state_dict(checkpoint["state_dict"])
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(model(images), module.eval()(images))


def test_the_finding_reads_both_records_and_says_which_is_ahead(make_record):
    from vitlib.lab.results.baseline import finding
    from vitlib.lab.results.tables import recipe_row

    data = {"batch_size": 128, "augment": {"flip": True}, "mix": None, "download": False}
    recipe = {"schedule": {"name": "cosine"}, "label_smoothing": 0.1}
    vit = dict(metrics={"top1": 0.514}, size={"parameters": 517_108, "flops_per_image": 73e6}, epochs=20, data=data,
               model={"preset": "vit", **recipe})  # fmt: skip
    cnn = make_record(name="cpu-resnet", metrics={"top1": 0.55}, size={"parameters": 472_756, "flops_per_image": 138e6}, epochs=20,
                      data={**data, "download": True}, model={"depth": 32, **recipe})  # fmt: skip
    assert finding(make_record(**vit), None) is None
    text = finding(make_record(**vit), cnn)
    assert "the same recipe (20 epochs" in text and "ResNet-32 (0.47 M parameters, 138 MFLOPs per image) reaches 55.0%" in text
    assert "the CNN is ahead by 3.6 points" in text
    assert "the ViT is ahead by 3.6 points" in finding(make_record(**{**vit, "metrics": {"top1": 0.586}}), cnn)
    assert "not the same budget" in finding(make_record(**{**vit, "epochs": 100}), cnn)
    assert "not the same budget" in finding(make_record(**{**vit, "model": {**vit["model"], "label_smoothing": 0.0}}), cnn)
    assert recipe_row(cnn)["model"] == "ResNet-32 (CNN)"


def test_a_baseline_run_is_recorded_with_its_weights_and_size(tmp_path, monkeypatch):
    import json

    from safetensors.torch import load_file

    from vitlib.lab.results.baseline import export_weights

    monkeypatch.setenv("VITLIB_QUICK", "1")
    main(["fit", "--config", "cpu_resnet", "--model.depth", "8", "--trainer.max_epochs", "2",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    run_dir = next(tmp_path.rglob("last.ckpt")).parents[1]
    weights, size = export_weights(run_dir, tmp_path / "out" / "tiny-resnet")
    model = model_from_checkpoint(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    assert size["parameters"] == count_parameters(model) and size["flops_per_image"] > 0
    saved = load_file(tmp_path / "out" / "tiny-resnet" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert json.loads((tmp_path / "out" / "tiny-resnet" / "config.json").read_text()) == {"depth": 8, "num_classes": 100}
    assert weights["bytes"] == (tmp_path / "out" / "tiny-resnet" / "model.safetensors").stat().st_size
