"""`pie models import`: torchvision weights saved elsewhere (a `module.`-prefixed .pth, a
.safetensors file) become checkpoints that give the stock model's logits, with their sparsity
counted from the saved tensors, and `pie infer` evaluates them; bad input writes nothing."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torchvision
from conftest import assert_one_line_error, pie
from safetensors.torch import save_file

from pie import checkpoints, store

ARCH = "mobilenet_v3_small"  # 1.5 M parameters; fmnist's 10 classes, read as RGB at 32 px


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stock(seed: int, classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=classes).eval()


def half_zeroed(model: torch.nn.Module) -> set[str]:
    """Zero every other entry of each conv and hidden dense weight (by hand, not by pie's rule);
    returns their names: every weight of 2 or more dimensions but the classifier's."""
    names = {k for k, v in model.state_dict().items() if v.ndim >= 2} - {"classifier.3.weight"}
    with torch.no_grad():
        for name in names:
            model.state_dict()[name].view(-1)[::2] = 0
    return names


def models_rows(root) -> list[tuple]:
    with store.connect(root, read_only=True) as con:
        return store.rows(
            con,
            "select model_id, method, level, achieved_sparsity, test_top1, sha256, config"
            " from models order by model_id",
        )


def test_imported_weights_give_the_stock_models_logits_and_are_evaluated(packed, tmp_path):
    pruned, dense = stock(0), stock(1)
    names = half_zeroed(pruned)
    torch.save({f"module.{k}": v for k, v in pruned.state_dict().items()}, tmp_path / "a.pth")
    save_file(dense.state_dict(), tmp_path / "b.safetensors")
    root = str(packed.path)
    common = ("--arch", ARCH, "--image-size", "32", "--experiment", "ext", "--root", root)
    out = pie("models", "import", str(tmp_path / "a.pth"), *common,
              "--method", "magnitude", "--sparsity", "0.5", "--seed", "3").output  # fmt: skip
    assert "ext-magnitude-s0.5-seed3" in out
    pie("models", "import", str(tmp_path / "b.safetensors"), *common)

    x = torch.randn(4, 3, 32, 32)
    for ident, source, file in (
        ("ext-magnitude-s0.5-seed3", pruned, "a.pth"),
        ("ext-dense-seed0", dense, "b.safetensors"),
    ):
        directory = packed.checkpoint(ident)
        model, sidecar = checkpoints.load(directory)
        with torch.inference_mode():
            assert torch.equal(model(x), source(x))
        saved = torch.load(directory / "model.pt", weights_only=True)
        zeros = sum(int((saved[n] == 0).sum()) for n in names)
        assert sidecar.achieved_sparsity == zeros / sum(saved[n].numel() for n in names)
        assert set(sidecar.layer_sparsity) == names
        digest = hashlib.sha256((directory / "model.pt").read_bytes()).hexdigest()
        source_digest = hashlib.sha256((tmp_path / file).read_bytes()).hexdigest()
        assert sidecar.sha256 == digest
        assert sidecar.compression == {"source": file, "sha256_source": source_digest}
        assert (sidecar.label_space, sidecar.num_classes, sidecar.arch) == (
            "fashion-mnist",
            10,
            ARCH,
        )
        # the model's own preprocessing (torchvision's metadata), at the size asked
        assert sidecar.preprocess["mean"] == [0.485, 0.456, 0.406]
        assert (sidecar.preprocess["size"], sidecar.preprocess["channels"]) == (32, 3)
    total = sum(pruned.state_dict()[n].numel() for n in names)

    def zeros(model):  # counted in the source model: half by hand, a few from the random init
        return sum(int((model.state_dict()[n] == 0).sum()) for n in names)

    assert zeros(pruned) >= sum((pruned.state_dict()[n].numel() + 1) // 2 for n in names)
    rows = models_rows(packed)
    assert [r[:3] for r in rows] == [
        ("ext-dense-seed0", "dense", 0.0),
        ("ext-magnitude-s0.5-seed3", "magnitude", 0.5),
    ]
    assert rows[1][3] == zeros(pruned) / total and rows[0][3] == zeros(dense) / total
    assert rows[0][4] is None and rows[1][4] is None  # test_top1: left to pie infer
    assert json.loads(rows[1][6])["compression"]["source"] == "a.pth"

    # the same file again: left as it is; another file under that id: refused
    again = pie("models", "import", str(tmp_path / "b.safetensors"), *common).output
    assert "already ext-dense-seed0" in again
    assert_one_line_error(
        pie("models", "import", str(tmp_path / "a.pth"), *common, ok=False),
        "model ext-dense-seed0 exists and is not a.pth",
    )

    pie("infer", "--root", root, "--workers", "0", "--device", "cpu")
    with store.connect(packed, read_only=True) as con:
        counts = store.rows(
            con, "select model_id, count(*) from predictions group by all order by all"
        )
    assert counts == [("ext-dense-seed0", 20), ("ext-magnitude-s0.5-seed3", 20)]
    listed = pie("models", "--root", root).output
    assert "ext-dense-seed0" in listed and "ext-magnitude-s0.5-seed3" in listed


def test_an_import_that_does_not_fit_is_one_line_and_writes_nothing(packed, tmp_path):
    torch.save(stock(0, classes=7).state_dict(), tmp_path / "seven.pt")
    state = stock(0).state_dict()
    save_file({k: v for k, v in state.items() if k != "features.0.1.running_mean"},
              tmp_path / "short.safetensors")  # fmt: skip
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    torch.save(state, tmp_path / "good.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    root = str(packed.path)
    for args, expected in (
        (["seven.pt"], "classifier.3.weight is (7, 1024), the model's (10, 1024)"),
        (["good.pt", "short.safetensors"], "it lacks weight 'features.0.1.running_mean'"),
        (["extra.pt"], "it has an unexpected weight 'extra.weight'"),
        (["bad.safetensors"], "cannot be read as safetensors"),
        (["none.pt"], "no such weights file"),
    ):
        paths = [str(tmp_path / a) for a in args]
        result = pie("models", "import", *paths, "--arch", ARCH, "--root", root, ok=False)
        assert_one_line_error(result, expected)
    for arch, expected in (
        ("resnet9", "unknown arch 'resnet9'"),
        ("timm:no_such_model", "unknown timm model 'no_such_model'"),
    ):
        result = pie("models", "import", str(tmp_path / "good.pt"), "--arch", arch,
                     "--root", root, ok=False)  # fmt: skip
        assert_one_line_error(result, expected)
    assert not packed.checkpoints.exists() or not any(packed.checkpoints.iterdir())
    assert models_rows(packed) == []


def test_importing_timm_without_timm_is_one_line(packed, tmp_path, monkeypatch):
    from pie import models

    def no_timm(name):
        raise ImportError(name)

    monkeypatch.setattr(models.importlib, "import_module", no_timm)
    torch.save(stock(0).state_dict(), tmp_path / "w.pt")
    result = pie("models", "import", str(tmp_path / "w.pt"), "--arch", "timm:resnet10t",
                 "--root", str(packed.path), ok=False)  # fmt: skip
    assert_one_line_error(
        result, "timm:resnet10t needs the optional extra: pip install 'pie[timm]'"
    )
    assert not packed.checkpoints.exists() or not any(packed.checkpoints.iterdir())
