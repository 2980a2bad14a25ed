"""Dataset readers: downloads, CIFAR pickles, image folders and zips, CINIC-10, SVHN, Tiny
ImageNet. Every test builds its own miniature release; only the last one reads shared data."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from tailmix._validation import ParameterError
from tailmix.data import cifar, imagefolder, svhn
from tailmix.data.cifar import UnsafePickleError, read_cifar
from tailmix.data.download import (
    ChecksumError,
    DatasetError,
    download_file,
    extract_archive,
    file_digest,
    verify_checksum,
)
from tailmix.data.files import FileDataset
from tailmix.data.imagefolder import read_cinic10, read_imagefolder
from tailmix.data.svhn import read_svhn
from tailmix.data.tinyimagenet import read_tiny_imagenet

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
ABC_MD5 = "900150983cd24fb0d6963f7d28e17f72"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- downloads


def test_checksums_of_a_known_file(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    assert file_digest(path) == ABC_SHA256
    assert file_digest(path, "md5") == ABC_MD5
    verify_checksum(path, sha256=ABC_SHA256, md5=ABC_MD5.upper())
    with pytest.raises(ChecksumError, match=f"md5.*is {ABC_MD5}, expected 0{{32}}"):
        verify_checksum(path, md5="0" * 32)
    with pytest.raises(ParameterError, match="'sha256' parameter"):
        verify_checksum(path, sha256="abc")
    with pytest.raises(ParameterError):
        verify_checksum(path)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        verify_checksum(tmp_path / "missing.bin", md5=ABC_MD5)


def test_download_file_from_a_file_url(tmp_path):
    origin = tmp_path / "origin.bin"
    origin.write_bytes(b"abc")
    dest = tmp_path / "out" / "abc.bin"
    assert download_file(origin.as_uri(), dest, sha256=ABC_SHA256) == dest
    assert dest.read_bytes() == b"abc"
    origin.unlink()  # a verified file already in place is not fetched again
    assert download_file(origin.as_uri(), dest, md5=ABC_MD5).read_bytes() == b"abc"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["abc.bin"]


def test_download_file_refuses_a_wrong_checksum_and_leaves_nothing(tmp_path):
    origin = tmp_path / "origin.bin"
    origin.write_bytes(b"abc")
    dest = tmp_path / "out" / "abc.bin"
    with pytest.raises(ChecksumError, match=f"sha256 {ABC_SHA256}, expected f{{64}}"):
        download_file(origin.as_uri(), dest, sha256="f" * 64)
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(ConnectionError, match="nothere"):
        download_file((tmp_path / "nothere").as_uri(), dest)
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(ParameterError, match="'url' parameter"):
        download_file("gopher://example.org/x", dest)


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_extract_archive_refuses_escaping_members(tmp_path):
    good = _tar_with(tmp_path / "good.tar.gz", [(tarfile.TarInfo("top/a.txt"), b"a")])
    extract_archive(good, tmp_path / "x")
    assert (tmp_path / "x" / "top" / "a.txt").read_bytes() == b"a"
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["top"]

    evil = _tar_with(tmp_path / "evil.tar.gz", [(tarfile.TarInfo("../escaped.txt"), b"e")])
    with pytest.raises(DatasetError, match="outside"):
        extract_archive(evil, tmp_path / "y")
    assert not (tmp_path / "escaped.txt").exists()

    link = tarfile.TarInfo("top/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    linked = _tar_with(tmp_path / "link.tar.gz", [(link, None)])
    with pytest.raises(DatasetError, match="link"):
        extract_archive(linked, tmp_path / "z")
    assert not (tmp_path / "z" / "top").exists()


# --------------------------------------------------------------------------- CIFAR


class _Py2Pickler(pickle._Pickler):
    """Writes strings as Python 2 ``str`` opcodes, like the official release's files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj.encode("ascii") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _py2_pickle(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def _fake_cifar(root: Path, num_classes: int, per_batch: int = 3, seed: int = 0) -> dict:
    """Write a miniature official release; return the arrays it holds, in reading order."""
    rng = np.random.default_rng(seed)
    release = cifar.CIFAR_RELEASES[num_classes]
    folder = root / release.folder
    folder.mkdir(parents=True)
    label_key = release.label_key
    names = [f"class{c}".encode() for c in range(num_classes)]
    out = {}
    for split, files in (("train", release.train), ("test", (release.test,))):
        xs, ys = [], []
        for name in files:
            data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, num_classes, size=per_batch)]
            batch = {b"data": data, label_key: labels, b"batch_label": name.encode()}
            batch[b"filenames"] = [f"img{i}.png".encode() for i in range(per_batch)]
            if num_classes == 100:
                batch[b"coarse_labels"] = [v // 5 for v in labels]
            _py2_pickle(folder / name, batch)
            xs.append(data)
            ys.extend(labels)
        out[split] = (np.concatenate(xs), np.array(ys))
    _py2_pickle(folder / release.meta, {release.names_key: names, b"num_vis": 3072})
    out["classes"] = [n.decode() for n in names]
    return out


def _check_cifar(data, expected, num_classes):
    for split in ("train", "test"):
        x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
        flat, labels = expected[split]
        assert x.dtype == np.uint8 and x.shape == (len(flat), 3, 32, 32)
        # Rows hold 1024 red, then 1024 green, then 1024 blue values, each row-major.
        assert x[1, 2, 3, 4] == flat[1, 2 * 1024 + 3 * 32 + 4]
        np.testing.assert_array_equal(x.reshape(len(flat), -1), flat)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, labels)
    assert data.classes == expected["classes"]
    assert data.name == f"cifar{num_classes}" and data.hflip


@pytest.mark.parametrize("num_classes", [10, 100])
def test_read_cifar_from_folder_release_folder_and_tarball(tmp_path, num_classes):
    expected = _fake_cifar(tmp_path / "root", num_classes)
    folder = tmp_path / "root" / cifar.CIFAR_RELEASES[num_classes].folder
    _check_cifar(read_cifar(tmp_path / "root", num_classes=num_classes), expected, num_classes)
    _check_cifar(read_cifar(str(folder), num_classes=num_classes), expected, num_classes)
    tarball = tmp_path / "release.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    _check_cifar(read_cifar(tarball, num_classes=num_classes), expected, num_classes)
    assert len(read_cifar(tmp_path / "root", num_classes=num_classes).train_x) == (
        15 if num_classes == 10 else 3
    )


def test_read_cifar_downloads_and_extracts_when_asked(tmp_path, monkeypatch):
    expected = _fake_cifar(tmp_path / "origin", 10)
    tarball = tmp_path / "served.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "origin" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    served = dataclasses.replace(cifar.CIFAR_RELEASES[10], url=tarball.as_uri(), md5=_md5(tarball))
    monkeypatch.setitem(cifar.CIFAR_RELEASES, 10, served)
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match=r"data.*cifar-10-batches-py.*data_batch_1"):
        read_cifar(root)
    _check_cifar(read_cifar(root, download=True), expected, 10)
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert (root / "cifar-10-python.tar.gz").is_file()

    wrong = dataclasses.replace(served, md5="0" * 32)
    monkeypatch.setitem(cifar.CIFAR_RELEASES, 10, wrong)
    with pytest.raises(ChecksumError):
        read_cifar(tmp_path / "other", download=True)


class _Payload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_read_cifar_refuses_a_pickle_that_would_run_code(tmp_path):
    _fake_cifar(tmp_path, 10)
    marker = tmp_path / "pwned"
    evil = {b"data": _Payload(f"touch {marker}"), b"labels": [0]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(evil, 2))
    with pytest.raises(UnsafePickleError, match=r"data_batch_3.*refusing.*system"):
        read_cifar(tmp_path)
    assert not marker.exists()
    # Other callables are refused too, whatever the protocol.
    sneaky = pickle.dumps({"data": eval}, protocol=4)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(sneaky)
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        read_cifar(tmp_path)


def test_read_cifar_argument_checks(tmp_path):
    with pytest.raises(ParameterError, match="'num_classes' parameter must be 10 or 100"):
        read_cifar(tmp_path, num_classes=20)
    with pytest.raises(ParameterError, match="'root'"):
        read_cifar(None)


# --------------------------------------------------------------------------- image folders


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def _tree(root: Path, layout: dict, size=(4, 5), seed=0) -> dict:
    """Write ``root/split/class/file`` PNGs of random pixels; return them as (H, W, 3)."""
    rng = np.random.default_rng(seed)
    images = {}
    for split, classes in layout.items():
        for cls, files in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
                _png(root / split / cls / f, pixels)
                images[f"{split}/{cls}/{f}"] = pixels
    return images


LAYOUT = {
    "train": {"dog": ["b.png", "a.png", "10.png", "2.png"], "cat": ["x.png", "y.png"]},
    "test": {"cat": ["t.png"], "dog": ["u.png", "s.png"]},
}


def _zip_folder(folder: Path, dest: Path, wrapper: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, wrapper + path.relative_to(folder).as_posix())
    return dest


def _check_tree(data, images):
    assert data.classes == ["cat", "dog"]
    train_order = [f"train/cat/{f}" for f in ("x.png", "y.png")]
    train_order += [f"train/dog/{f}" for f in ("10.png", "2.png", "a.png", "b.png")]
    test_order = ["test/cat/t.png", "test/dog/s.png", "test/dog/u.png"]
    np.testing.assert_array_equal(data.train_y, [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(data.test_y, [0, 1, 1])
    assert data.train_y.dtype == np.int64 and data.train_x.dtype == np.uint8
    for x, order in ((data.train_x, train_order), (data.test_x, test_order)):
        assert x.shape == (len(order), 3, 4, 5)
        np.testing.assert_array_equal(x, np.stack([images[k].transpose(2, 0, 1) for k in order]))


@pytest.mark.parametrize("form", ["folder", "zip", "wrapped zip"])
def test_read_imagefolder_layouts(tmp_path, form):
    images = _tree(tmp_path / "src", LAYOUT)
    (tmp_path / "src" / "train" / "dog" / "notes.txt").write_text("not an image")
    source = tmp_path / "src"
    if form != "folder":
        wrapper = "mini/" if form == "wrapped zip" else ""
        source = _zip_folder(source, tmp_path / "mini.zip", wrapper)
    data = read_imagefolder(source, cache_dir=tmp_path / "cache")
    _check_tree(data, images)
    assert data.name == ("src" if form == "folder" else "mini") and data.hflip


def test_read_imagefolder_other_split_names_and_grey_images(tmp_path):
    _tree(tmp_path, {"fit": {"a": ["1.png"]}, "holdout": {"a": ["2.png"]}})
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    Image.fromarray(grey, mode="L").save(tmp_path / "fit" / "a" / "1.png")
    data = read_imagefolder(
        tmp_path, train_split="fit", test_split="holdout", cache_dir=tmp_path / "c", name="mini"
    )
    assert data.name == "mini"
    np.testing.assert_array_equal(data.train_x[0], np.stack([grey] * 3))


def test_read_imagefolder_reuses_its_cache(tmp_path, monkeypatch):
    images = _tree(tmp_path / "src", LAYOUT)
    source = _zip_folder(tmp_path / "src", tmp_path / "mini.zip")
    cache = tmp_path / "cache"
    first = read_imagefolder(source, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(imagefolder, "decode_images", refuse)
    second = read_imagefolder(source, cache_dir=cache)
    _check_tree(second, images)
    np.testing.assert_array_equal(first.train_x, second.train_x)
    # Another split choice is another cache entry.
    with pytest.raises(AssertionError, match="decoded again"):
        read_imagefolder(source, train_split="test", test_split="train", cache_dir=cache)


def test_read_imagefolder_cache_follows_content_and_environment(tmp_path, monkeypatch):
    images = _tree(tmp_path / "src", LAYOUT)
    monkeypatch.setenv("TAILMIX_CACHE", str(tmp_path / "envcache"))
    read_imagefolder(tmp_path / "src")
    assert len(list((tmp_path / "envcache").glob("*.npz"))) == 1
    new = np.zeros((4, 5, 3), dtype=np.uint8)
    _png(tmp_path / "src" / "test" / "cat" / "t.png", new)
    os.utime(tmp_path / "src" / "test" / "cat" / "t.png", ns=(1, 1))
    images["test/cat/t.png"] = new
    _check_tree(read_imagefolder(tmp_path / "src"), images)
    assert len(list((tmp_path / "envcache").glob("*.npz"))) == 2
    # A damaged cache file is rebuilt, with a warning, not trusted.
    for path in (tmp_path / "envcache").glob("*.npz"):
        path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        _check_tree(read_imagefolder(tmp_path / "src"), images)


def test_read_imagefolder_errors(tmp_path):
    cache = {"cache_dir": tmp_path / "cache"}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_imagefolder(tmp_path / "nowhere", **cache)
    with pytest.raises(ParameterError, match="'test_split'"):
        read_imagefolder(tmp_path, train_split="x", test_split="x", **cache)

    loose = tmp_path / "loose.zip"  # images beside the class folders: neither layout
    with zipfile.ZipFile(loose, "w") as zf:
        zf.writestr("cat/1.png", b"")
        zf.writestr("dog/1.png", b"")
        zf.writestr("3.png", b"")
    with pytest.raises(DatasetError, match=r"neither image-folder layout: SPLIT/CLASS/IMAGE "
                       r"needs a 'train' folder.*CLASS/IMAGE two or more class folders.*"
                       r"'3.png' is not in a class folder.*Found: \['3.png', 'cat/', 'dog/'\]"):
        read_imagefolder(loose, **cache)
    deep = tmp_path / "deep.zip"
    with zipfile.ZipFile(deep, "w") as zf:
        zf.writestr("train/cat/more/1.png", b"")
        zf.writestr("test/cat/1.png", b"")
    with pytest.raises(DatasetError, match=r"SPLIT/CLASS/IMAGE layout.*train/cat/more/1.png"):
        read_imagefolder(deep, **cache)

    root = tmp_path / "tree"
    _tree(root, LAYOUT)
    (root / "train" / "bird").mkdir()
    with pytest.raises(DatasetError, match=r"train/bird holds no images"):
        read_imagefolder(root, **cache)
    _png(root / "train" / "bird" / "1.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(
        DatasetError, match=r"missing from 'test': \['bird'\]; only in 'test': \[\]"
    ):
        read_imagefolder(root, **cache)
    _png(root / "test" / "bird" / "1.png", np.zeros((5, 4, 3), np.uint8))
    # Images of differing sizes make no one array: listed as files, with a note.
    listed = read_imagefolder(root, **cache)
    assert isinstance(listed, FileDataset) and "test/bird/1.png 4x5" in listed.notes[0]
    (root / "test" / "bird" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"Cannot read image .*test/bird/1.png"):
        read_imagefolder(root, **cache)


def test_read_cinic10(tmp_path):
    layout = {s: {"airplane": ["1.png", "2.png"], "bird": ["3.png"]} for s in LAYOUT}
    layout["valid"] = {"airplane": ["v.png"], "bird": ["w.png", "z.png"]}
    images = _tree(tmp_path / "cinic", layout)
    test = read_cinic10(tmp_path / "cinic", cache_dir=tmp_path / "c")
    valid = read_cinic10(tmp_path / "cinic", eval_split="valid", cache_dir=tmp_path / "c")
    assert test.name == valid.name == "cinic10"
    assert test.classes == ["airplane", "bird"]
    np.testing.assert_array_equal(test.test_y, [0, 0, 1])
    np.testing.assert_array_equal(valid.test_y, [0, 1, 1])
    np.testing.assert_array_equal(valid.test_x[2], images["valid/bird/z.png"].transpose(2, 0, 1))
    np.testing.assert_array_equal(valid.train_x, test.train_x)
    with pytest.raises(ParameterError, match="'eval_split'"):
        read_cinic10(tmp_path / "cinic", eval_split="val")
    _tree(tmp_path / "partial", {"train": layout["train"]})
    with pytest.raises(DatasetError, match="missing the split folder.*valid/, test/"):
        read_cinic10(tmp_path / "partial", cache_dir=tmp_path / "c")


# --------------------------------------------------------------------------- SVHN


def _fake_svhn(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", 5), ("test", 3)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [9], [10], [3]][:n], dtype=np.uint8)
        root.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = x, y
    return out


def test_read_svhn(tmp_path):
    arrays = _fake_svhn(tmp_path)
    data = read_svhn(tmp_path)
    np.testing.assert_array_equal(data.train_y, [0, 1, 9, 0, 3])
    np.testing.assert_array_equal(data.test_y, [0, 1, 9])
    x = arrays["train"][0]
    assert data.train_x.shape == (5, 3, 32, 32) and data.train_x.dtype == np.uint8
    assert data.train_x[4, 2, 7, 11] == x[7, 11, 2, 4]
    np.testing.assert_array_equal(data.test_x, arrays["test"][0].transpose(3, 2, 0, 1))
    assert data.classes == [str(d) for d in range(10)]
    assert data.name == "svhn" and not data.hflip


def test_read_svhn_missing_and_download(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        read_svhn(tmp_path / "empty")
    _fake_svhn(tmp_path / "origin")
    served = {
        split: (name, (tmp_path / "origin" / name).as_uri(), _md5(tmp_path / "origin" / name))
        for split, (name, _, _) in svhn.SVHN_FILES.items()
    }
    monkeypatch.setattr(svhn, "SVHN_FILES", served)
    data = read_svhn(tmp_path / "fetched", download=True)
    np.testing.assert_array_equal(data.train_y, [0, 1, 9, 0, 3])
    scipy.io.savemat(tmp_path / "fetched" / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2))})
    with pytest.raises(DatasetError, match="lacks the variable"):
        read_svhn(tmp_path / "fetched")


# --------------------------------------------------------------------------- Tiny ImageNet

WNIDS = ["n03", "n01", "n02"]


def _fake_tiny(root: Path, seed: int = 0) -> dict:
    """A three-class release of 64x64 JPEGs; return each file's decoded pixels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text(
        "n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tcat\nn03\tgoldfish\n"
    )
    pixels = {}

    def jpeg(rel: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, "JPEG")
        with Image.open(path) as image:
            pixels[rel] = np.asarray(image.convert("RGB")).transpose(2, 0, 1)

    for i, wnid in enumerate(WNIDS):
        for j in range(i + 1):
            jpeg(f"train/{wnid}/images/{wnid}_{j}.JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for k, wnid in enumerate(["n02", "n03", "n02", "n01"]):
        jpeg(f"val/images/val_{k}.JPEG")
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    jpeg("test/images/test_0.JPEG")
    return pixels


def test_read_tiny_imagenet(tmp_path):
    pixels = _fake_tiny(tmp_path / "tiny-imagenet-200")
    data = read_tiny_imagenet(tmp_path, cache_dir=tmp_path / "c")
    assert data.classes == ["goldfish (n03)", "goldfish (n01)", "cat"]
    assert data.name == "tinyimagenet" and data.hflip
    np.testing.assert_array_equal(data.train_y, [0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(data.train_x[2], pixels["train/n01/images/n01_1.JPEG"])
    # Validation images ordered by class, then file name.
    np.testing.assert_array_equal(data.test_y, [0, 1, 2, 2])
    expected = [pixels[f"val/images/val_{k}.JPEG"] for k in (1, 3, 0, 2)]
    np.testing.assert_array_equal(data.test_x, np.stack(expected))
    assert data.train_x.shape == (6, 3, 64, 64)

    release = tmp_path / "tiny-imagenet-200"
    archive = _zip_folder(release, tmp_path / "tiny.zip", wrapper="tiny-imagenet-200/")
    from_zip = read_tiny_imagenet(archive, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(from_zip.train_x, data.train_x)


def test_read_tiny_imagenet_without_word_lists(tmp_path):
    _fake_tiny(tmp_path)
    (tmp_path / "wnids.txt").unlink()
    (tmp_path / "words.txt").unlink()
    data = read_tiny_imagenet(tmp_path, cache_dir=tmp_path / "c")
    assert data.classes == ["n01", "n02", "n03"]
    np.testing.assert_array_equal(data.train_y, [0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(data.test_y, [0, 1, 1, 2])


def test_read_tiny_imagenet_errors(tmp_path):
    root = tmp_path / "tiny"
    _fake_tiny(root)
    cache = {"cache_dir": tmp_path / "c"}
    notes = root / "val" / "val_annotations.txt"
    good = notes.read_text()
    notes.write_text(good + "val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=r"val_annotations.txt, line 5: unknown class 'n99'"):
        read_tiny_imagenet(root, **cache)
    notes.write_text(good + "val_9.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=r"line 5: image .*val/images/val_9.JPEG is missing"):
        read_tiny_imagenet(root, **cache)
    notes.unlink()
    with pytest.raises(DatasetError, match="val_annotations.txt is missing"):
        read_tiny_imagenet(root, **cache)
    notes.write_text(good)
    Image.new("RGB", (32, 32)).save(root / "train" / "n02" / "images" / "n02_1.JPEG")
    with pytest.raises(
        DatasetError, match=r"n02_1.JPEG is 32x32 \(width x height\) but .*n03_0.JPEG"
    ):
        read_tiny_imagenet(root, **cache)
    for path in sorted((root / "val").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "val").rmdir()
    with pytest.raises(DatasetError, match="missing val/"):
        read_tiny_imagenet(root, **cache)


# --------------------------------------------------------------------------- shared real data

REAL_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-lt-jpeg.zip"


@pytest.mark.slow
def test_read_the_shared_cifar10_lt_jpeg_zip(tmp_path):
    if not REAL_ZIP.is_file():
        pytest.skip(f"shared CIFAR-10-LT JPEG zip not present at {REAL_ZIP}")
    # The session's cache (see conftest): other tests decode this zip too.
    data = read_imagefolder(REAL_ZIP)
    assert data.classes == [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    counts = [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    np.testing.assert_array_equal(np.bincount(data.train_y), counts)
    np.testing.assert_array_equal(np.bincount(data.test_y), [1000] * 10)
    assert data.train_x.shape == (20431, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.train_x.dtype == np.uint8
    assert 60 < data.train_x.mean() < 200 and data.train_x.std() > 30
    cached = read_imagefolder(REAL_ZIP)
    np.testing.assert_array_equal(cached.test_x, data.test_x)


# --------------------------------------------------------------------------- one-line errors


def _train_error(capsys, dataset: str, root: Path, *extra: str) -> str:
    """`tailmix train` on ``root``: exit 2 and one `tailmix: error:` line, returned."""
    from tailmix.cli import main

    args = ["train", "--dataset", dataset, "--data-root", str(root), "--out",
            str(root.parent / "run"), "--epochs", "1", "--arch", "small_cnn", "--no-progress",
            "--set", "train.device=cpu", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tailmix: error: ") and "\n" not in err, err
    return err


def _offline(monkeypatch) -> None:
    import urllib.error
    import urllib.request

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("dataset, looked_for", [
    ("cifar10", ["cifar-10-batches-py", "data_batch_1", "cifar-10-python.tar.gz",
                 "dataset.download: true", cifar.CIFAR_RELEASES[10].url]),
    ("cifar100", ["cifar-100-python", "cifar-100-python.tar.gz", "dataset.download: true"]),
    ("svhn", ["train_32x32.mat", "dataset.download: true", svhn.SVHN_FILES["train"][1]]),
])
def test_a_root_without_the_files_says_what_was_looked_for(tmp_path, capsys, dataset,
                                                           looked_for):
    (tmp_path / "data").mkdir()
    err = _train_error(capsys, dataset, tmp_path / "data")
    for text in looked_for:
        assert text in err


@pytest.mark.parametrize("dataset", ["cifar10", "svhn"])
def test_a_root_that_is_a_file(tmp_path, capsys, dataset):
    (tmp_path / "notes.txt").write_text("not a dataset")
    err = _train_error(capsys, dataset, tmp_path / "notes.txt")
    assert "notes.txt" in err and "is a file, not a folder" in err


def test_a_damaged_cifar_tarball(tmp_path, capsys):
    _fake_cifar(tmp_path / "origin", 10)
    tarball = tmp_path / "data" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "origin" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    whole = tarball.read_bytes()
    tarball.write_bytes(whole[: len(whole) // 2])  # cut short
    err = _train_error(capsys, "cifar10", tmp_path / "data")
    assert "cifar-10-python.tar.gz is damaged or cut short" in err and "download it again" in err
    tarball.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)  # not gzip data at all
    assert "is damaged" in _train_error(capsys, "cifar10", tmp_path / "data")
    tarball.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match="damaged or cut short"):
        extract_archive(tarball, tmp_path / "out")


def test_an_unsafe_pickle_is_one_line(tmp_path, capsys):
    _fake_cifar(tmp_path / "data", 10)
    evil = pickle.dumps({"data": eval}, protocol=4)
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2").write_bytes(evil)
    err = _train_error(capsys, "cifar10", tmp_path / "data")
    assert "data_batch_2" in err and "refusing to load global builtins.eval" in err
    assert issubclass(UnsafePickleError, DatasetError)


@pytest.mark.parametrize("dataset, url", [("cifar10", cifar.CIFAR_RELEASES[10].url),
                                          ("svhn", svhn.SVHN_FILES["train"][1])])
def test_a_download_without_network_is_one_line(tmp_path, capsys, monkeypatch, dataset, url):
    _offline(monkeypatch)
    err = _train_error(capsys, dataset, tmp_path / "data", "--set", "dataset.download=true")
    assert f"Could not download {url}" in err and "place it at" in err
    with pytest.raises(ConnectionError):  # what code that caught it before still catches
        download_file(url, tmp_path / "file")
