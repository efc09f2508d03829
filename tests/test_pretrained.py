"""save_pretrained / from_pretrained: local folders, a local HTTP server, the cache, checksums, offline."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from vitlib import ViT, ViTConfig
from vitlib.support import pretrained
from vitlib.support.pretrained import CONFIG_NAME, WEIGHTS_NAME, PretrainedError, from_pretrained, save_pretrained, sha256_of

CONFIG = ViTConfig.from_preset("vit_tiny", depth=1, num_classes=10)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


class CutOffHandler(QuietHandler):
    """Announces 1000 bytes, sends 10 and closes: a download interrupted halfway."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")


def serve(directory: Path, handler: type = QuietHandler) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch):
    monkeypatch.setattr(pretrained, "TIMEOUT_S", 5)  # bounds every request of these tests


@pytest.fixture
def saved(tmp_path) -> tuple[ViT, Path]:
    torch.manual_seed(0)
    model = ViT(CONFIG).eval()
    return model, save_pretrained(model, tmp_path / "published" / "vit-tiny")


def same_outputs(a: ViT, b: ViT) -> bool:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_local_round_trip(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no temporary files left
    assert json.loads((folder / CONFIG_NAME).read_text()) == CONFIG.to_dict()
    loaded = from_pretrained(folder)
    assert loaded.cfg == CONFIG and same_outputs(model, loaded)
    assert same_outputs(model, from_pretrained(folder / WEIGHTS_NAME, sha256=sha256_of(folder / WEIGHTS_NAME)))
    assert not same_outputs(model, ViT(CONFIG))  # the comparison can fail


def test_local_failures_name_the_file_and_the_problem(saved, tmp_path):
    model, folder = saved
    with pytest.raises(PretrainedError, match="not a folder written by save_pretrained"):
        from_pretrained(tmp_path / "nowhere")
    with pytest.raises(PretrainedError, match="not the expected"):
        from_pretrained(folder, sha256="0" * 64)

    bad_config = tmp_path / "bad_config"
    save_pretrained(model, bad_config)
    (bad_config / CONFIG_NAME).write_text(json.dumps({**CONFIG.to_dict(), "heads": 5}))
    with pytest.raises(PretrainedError, match=r"ViTConfig.dim \(64\) must be divisible by ViTConfig.heads \(5\)"):
        from_pretrained(bad_config)

    other_model = tmp_path / "other_model"
    save_pretrained(ViT(CONFIG.replace(dim=32)), other_model)
    (other_model / CONFIG_NAME).write_text((folder / CONFIG_NAME).read_text())  # config and weights disagree
    with pytest.raises(PretrainedError, match="does not fit the model"):
        from_pretrained(other_model)

    truncated = tmp_path / "truncated"
    save_pretrained(model, truncated)
    weights = (truncated / WEIGHTS_NAME).read_bytes()
    (truncated / WEIGHTS_NAME).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(PretrainedError, match="not a readable safetensors file"):
        from_pretrained(truncated)


def test_download_verifies_caches_and_works_offline(saved, tmp_path):
    model, folder = saved
    digest = sha256_of(folder / WEIGHTS_NAME)
    cache = tmp_path / "cache"
    server, root = serve(folder.parent)
    url = f"{root}/vit-tiny"
    try:
        assert same_outputs(model, from_pretrained(url, sha256=digest, cache_dir=cache))
        with pytest.raises(PretrainedError, match="not the expected"):
            from_pretrained(f"{url}/", sha256="f" * 64, cache_dir=cache)  # same folder, a wrong checksum
        (cached,) = cache.iterdir()
        assert sorted(p.name for p in cached.iterdir()) == [CONFIG_NAME]  # the mismatching file was not kept
        assert same_outputs(model, from_pretrained(f"{url}/{WEIGHTS_NAME}", sha256=digest, cache_dir=cache))
        with pytest.raises(PretrainedError) as missing:
            from_pretrained(f"{root}/no-such-model", cache_dir=cache)
        assert f"{root}/no-such-model/{CONFIG_NAME}" in str(missing.value) and "HTTP 404" in str(missing.value)
    finally:
        stop(server)
    # The server is gone: the cached copy is used, offline.
    assert same_outputs(model, from_pretrained(url, sha256=digest, cache_dir=cache))
    with pytest.raises(PretrainedError) as offline:
        from_pretrained(f"{root}/never-downloaded", cache_dir=cache)
    message = str(offline.value)
    assert f"{root}/never-downloaded/{CONFIG_NAME}" in message and str(cache) in message and "VITLIB_CACHE" in message


def test_cache_folder_comes_from_the_environment(saved, tmp_path, monkeypatch):
    model, folder = saved
    monkeypatch.setenv("VITLIB_CACHE", str(tmp_path / "env-cache"))
    assert pretrained.default_cache_dir() == tmp_path / "env-cache"
    server, root = serve(folder.parent)
    try:
        assert same_outputs(model, from_pretrained(f"{root}/vit-tiny"))
    finally:
        stop(server)
    assert len(list((tmp_path / "env-cache").glob(f"*/{WEIGHTS_NAME}"))) == 1


def test_interrupted_download_leaves_nothing_in_the_cache(tmp_path):
    server, root = serve(tmp_path, CutOffHandler)
    cache = tmp_path / "cache"
    try:
        with pytest.raises(PretrainedError, match="could not download"):
            from_pretrained(f"{root}/model", cache_dir=cache)
    finally:
        stop(server)
    assert not [p for p in cache.rglob("*") if p.is_file()]
