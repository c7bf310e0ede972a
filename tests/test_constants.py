"""Constants checked against their published sources, value by value: the ImageNet-C and
CIFAR-10-C severity tables (hendrycks/robustness, `ImageNet-C/create_c/make_imagenet_c.py` and
`make_cifar_c.py`), the AlexNet errors that normalise the corruption error (Hendrycks &
Dietterich 2019), and the order of the 1000 ImageNet-1k classes (a hand-written sample of the
standard list)."""

from __future__ import annotations

import pytest

from ingest.corruption_tables import CIFAR, CORRUPTIONS, IMAGENET
from pie import store
from pie.catalog import ensure_label_space, imagenet1k

# make_imagenet_c.py, `c = [...]` of each corruption, severities 1..5 (zoom_blur: the
# np.arange(1, stop, step) of each severity as (stop, step); frost: (image, frost) weights)
IMAGENET_SOURCE = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "elastic_transform": (  # 244, not 224, in the source
        (244 * 2, 244 * 0.7, 244 * 0.1),
        (244 * 2, 244 * 0.08, 244 * 0.2),
        (244 * 0.05, 244 * 0.01, 244 * 0.02),
        (244 * 0.07, 244 * 0.01, 244 * 0.02),
        (244 * 0.12, 244 * 0.01, 244 * 0.02),
    ),
}
# make_cifar_c.py, the same way (elastic_transform: IMSIZE = 32)
CIFAR_SOURCE = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "elastic_transform": (
        (32 * 0, 32 * 0, 32 * 0.08),
        (32 * 0.05, 32 * 0.2, 32 * 0.07),
        (32 * 0.08, 32 * 0.06, 32 * 0.06),
        (32 * 0.1, 32 * 0.04, 32 * 0.05),
        (32 * 0.1, 32 * 0.03, 32 * 0.03),
    ),
}
# frost rows carry a third value of pie's own (the synthesised texture's feature size, no
# photographs): 5 px at 224 px, 0.2 x 5 at 32 px (make_cifar_c.py shrinks its photographs by 0.2)
FROST_FEATURE = {"imagenet": 5, "cifar": 1}

TABLES = {"imagenet": (IMAGENET, IMAGENET_SOURCE), "cifar": (CIFAR, CIFAR_SOURCE)}


def test_both_tables_have_every_corruption() -> None:
    assert set(IMAGENET_SOURCE) == set(CIFAR_SOURCE) == set(CORRUPTIONS)
    assert set(IMAGENET) == set(CIFAR) == set(CORRUPTIONS)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_severity_row_is_the_sources(table: str, name: str) -> None:
    ours, source = TABLES[table][0][name], TABLES[table][1][name]
    assert len(ours) == 5
    for severity, (row, expected) in enumerate(zip(ours, source, strict=True), start=1):
        if name == "frost":
            assert row[2] == FROST_FEATURE[table]
            row = row[:2]
        assert row == pytest.approx(expected, rel=1e-12, abs=0), (table, name, severity)


# AlexNet top-1 error averaged over severities 1-5 on the released ImageNet-C files, and on the
# clean validation set (Hendrycks & Dietterich 2019)
ALEXNET = {
    "clean": 0.435,
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}


def test_alexnet_corruption_errors() -> None:
    con = store.memory()
    rows = con.execute(
        "select label_space, model, corruption, mean_error from corruption_reference"
    ).fetchall()
    con.close()
    assert {(s, m) for s, m, _, _ in rows} == {("imagenet1k", "alexnet")}
    assert {c: e for _, _, c, e in rows} == ALEXNET


# (index, wnid, name) of the standard ImageNet-1k list: wnids as in Keras'
# imagenet_class_index.json, names as in torchvision's _IMAGENET_CATEGORIES
IMAGENET_SAMPLE = (
    (0, "n01440764", "tench"),
    (1, "n01443537", "goldfish"),
    (2, "n01484850", "great white shark"),
    (99, "n01855672", "goose"),
    (134, "n02012849", "crane bird"),
    (151, "n02085620", "Chihuahua"),
    (207, "n02099601", "golden retriever"),
    (281, "n02123045", "tabby"),
    (291, "n02129165", "lion"),
    (340, "n02391049", "zebra"),
    (388, "n02510455", "giant panda"),
    (409, "n02708093", "analog clock"),
    (417, "n02782093", "balloon"),
    (517, "n03126707", "crane"),
    (531, "n03197337", "digital watch"),
    (638, "n03710637", "maillot"),
    (639, "n03710721", "maillot tank suit"),
    (717, "n03930630", "pickup"),
    (779, "n04146614", "school bus"),
    (817, "n04285008", "sports car"),
    (916, "n06359193", "web site"),
    (917, "n06596364", "comic book"),
    (937, "n07714990", "broccoli"),
    (954, "n07753592", "banana"),
    (970, "n09193705", "alp"),
    (985, "n11939491", "daisy"),
    (998, "n13133613", "ear"),
    (999, "n15075141", "toilet tissue"),
)


def test_imagenet1k_class_order() -> None:
    classes = imagenet1k().classes
    assert [c[0] for c in classes] == list(range(1000))
    wnids = [c[1] for c in classes]
    assert wnids == sorted(set(wnids))  # index = position of the wnid in sorted order
    for expected in IMAGENET_SAMPLE:
        assert classes[expected[0]] == expected
    con = store.memory()  # and as registered: the classes table the analysis reads
    ensure_label_space(con, imagenet1k())
    stored = con.execute(
        "select class_id, wnid, name from classes where label_space = 'imagenet1k'"
        " and class_id in (select unnest(?))",
        [[c[0] for c in IMAGENET_SAMPLE]],
    ).fetchall()
    con.close()
    assert sorted(stored) == list(IMAGENET_SAMPLE)
