"""Data locations, atomic writes, checked downloads (against a local HTTP server only) and the dataset registry."""

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

import mini_bert
from mini_bert.data import sources as io_utils
from mini_bert.data.sources import (DATASETS, DatasetSource, RemoteFile, atomic_write_bytes, atomic_write_text,
                                      cache_dir, data_root, extract_archive, fetch, file_md5, file_sha256, locate,
                                      locate_parts)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIBERT_CACHE_DIR", str(tmp_path / "cache"))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- locations -----------------------------------------------------------------------------------------------------

def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIBERT_DATA_DIR", raising=False)
    repo = Path(mini_bert.__file__).resolve().parents[1]
    assert data_root() == repo.parent / "shared" / "data"
    monkeypatch.setenv("MINIBERT_DATA_DIR", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"


def test_cache_dir_from_env(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MINIBERT_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "mini_bert"


# -- atomic writes and digests -------------------------------------------------------------------------------------

def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "first")
    atomic_write_text(p, "second é")
    assert p.read_text(encoding="utf-8") == "second é"
    assert os.listdir(p.parent) == ["f.txt"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io_utils.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_file_digests(tmp_path):
    data = os.urandom(3 << 20)  # spans several 1 MiB read chunks
    p = tmp_path / "x"
    p.write_bytes(data)
    assert file_md5(p) == hashlib.md5(data).hexdigest()
    assert file_sha256(p) == _sha(data)


# -- fetch ---------------------------------------------------------------------------------------------------------

def test_fetch_good_download_then_reuse_without_request(server, tmp_path):
    data = b"hello corpus\n" * 1000
    (server.root / "c.txt").write_bytes(data)
    dest = tmp_path / "dl"
    p = fetch(f"{server.url}/c.txt", sha256=_sha(data), md5=hashlib.md5(data).hexdigest(), dest_dir=dest,
              progress=False)
    assert p == dest / "c.txt" and p.read_bytes() == data
    assert server.requests == ["/c.txt"]
    (server.root / "c.txt").unlink()  # a second request would now fail
    assert fetch(f"{server.url}/c.txt", sha256=_sha(data), dest_dir=dest, progress=False) == p
    assert server.requests == ["/c.txt"]
    assert os.listdir(dest) == ["c.txt"]


def test_fetch_checksum_mismatch_raises_and_leaves_nothing(server, tmp_path):
    (server.root / "bad.txt").write_bytes(b"corrupted bytes")
    dest = tmp_path / "dl"
    expected = _sha(b"the real bytes")
    with pytest.raises(ValueError) as err:
        fetch(f"{server.url}/bad.txt", sha256=expected, dest_dir=dest, progress=True)
    msg = str(err.value)
    assert "bad.txt" in msg and expected in msg and _sha(b"corrupted bytes") in msg
    assert list(dest.iterdir()) == []


def test_fetch_md5_mismatch_is_also_caught(server, tmp_path):
    (server.root / "m.txt").write_bytes(b"abc")
    with pytest.raises(ValueError, match="md5"):
        fetch(f"{server.url}/m.txt", md5="0" * 32, dest_dir=tmp_path / "dl", progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


def test_fetch_replaces_a_corrupted_cached_file(server, tmp_path):
    data = b"good"
    (server.root / "g.txt").write_bytes(data)
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "g.txt").write_bytes(b"truncated")
    p = fetch(f"{server.url}/g.txt", sha256=_sha(data), dest_dir=dest, filename="g.txt", progress=False)
    assert p.read_bytes() == data and server.requests == ["/g.txt"]


def test_fetch_network_error_names_url(server, tmp_path):
    with pytest.raises(OSError, match="missing.txt"):
        fetch(f"{server.url}/missing.txt", dest_dir=tmp_path / "dl", progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


# -- archives ------------------------------------------------------------------------------------------------------

def test_extract_zip_with_prefix_and_tar(tmp_path):
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("brown/ca01", "The/at dog/nn")
        zf.writestr("brown/README", "readme")
        zf.writestr("other/x", "outside prefix")
    out = extract_archive(z, tmp_path / "out", strip_prefix="brown/")
    assert sorted(os.listdir(out)) == ["README", "ca01"]
    assert (out / "ca01").read_text() == "The/at dog/nn"

    t = tmp_path / "a.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        info = tarfile.TarInfo("d/f.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    assert (extract_archive(t, tmp_path / "tout") / "d" / "f.txt").read_bytes() == b"abc"


def test_extract_refuses_path_traversal(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        extract_archive(z, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()


# -- registry and locate -------------------------------------------------------------------------------------------

@pytest.fixture
def fake_dataset(server, monkeypatch):
    whole = b"line 1\nline 2\nline 3\n"
    (server.root / "whole.txt").write_bytes(whole)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("pack/a.txt", "from the archive")
    (server.root / "pack.zip").write_bytes(zbuf.getvalue())
    monkeypatch.setitem(DATASETS, "toy", DatasetSource(
        description="test", files={"whole.txt": RemoteFile(f"{server.url}/whole.txt", sha256=_sha(whole),
                                                           parts=("whole.part1.txt", "whole.part2.txt"))}))
    monkeypatch.setitem(DATASETS, "toyzip", DatasetSource(
        description="test", archive=RemoteFile(f"{server.url}/pack.zip", sha256=_sha(zbuf.getvalue())),
        archive_prefix="pack/"))
    return whole


def test_locate_prefers_data_root_then_cache_then_download(server, fake_dataset, tmp_path):
    local = tmp_path / "data" / "toy"
    local.mkdir(parents=True)
    (local / "whole.txt").write_text("local copy")
    assert locate("toy", "whole.txt", data_dir=tmp_path / "data") == local / "whole.txt"
    assert server.requests == []

    p = locate("toy", "whole.txt", data_dir=tmp_path / "nowhere", progress=False)
    assert p.read_bytes() == fake_dataset and p.is_relative_to(tmp_path / "cache")
    assert locate("toy", "whole.txt", data_dir=tmp_path / "nowhere", progress=False) == p
    assert server.requests == ["/whole.txt"]


def test_locate_archive_member(server, fake_dataset, tmp_path):
    p = locate("toyzip", "a.txt", data_dir=tmp_path / "nowhere", progress=False)
    assert p.read_text() == "from the archive"
    assert locate("toyzip", "a.txt", data_dir=tmp_path / "nowhere", progress=False) == p
    assert server.requests == ["/pack.zip"]
    with pytest.raises(ValueError, match="no file 'b.txt'"):
        locate("toyzip", "b.txt", data_dir=tmp_path / "nowhere", progress=False)


def test_locate_unknown_dataset_and_file(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        locate("nope", "x", data_dir=tmp_path)
    with pytest.raises(ValueError, match="known files"):
        locate("sst2", "nope.tsv", data_dir=tmp_path)


def test_locate_parts(server, fake_dataset, tmp_path):
    local = tmp_path / "data" / "toy"
    local.mkdir(parents=True)
    (local / "whole.part1.txt").write_text("line 1\n")
    (local / "whole.part2.txt").write_text("line 2\nline 3\n")
    assert locate_parts("toy", "whole.txt", data_dir=tmp_path / "data") == [local / "whole.part1.txt",
                                                                             local / "whole.part2.txt"]
    (local / "whole.txt").write_text("whole")
    assert locate_parts("toy", "whole.txt", data_dir=tmp_path / "data") == [local / "whole.txt"]
    (local / "whole.txt").unlink()
    (local / "whole.part2.txt").unlink()  # an incomplete set of parts is not used
    assert locate_parts("toy", "whole.txt", data_dir=tmp_path / "data", progress=False)[0].read_bytes() == \
        fake_dataset
    assert server.requests == ["/whole.txt"]


def test_registry_digests_match_shared_data():
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set MINIBERT_DATA_DIR)")
    checked = 0
    for name, source in DATASETS.items():
        for filename, remote in source.files.items():
            if remote.sha256 is None:
                continue
            whole, parts = root / name / filename, [root / name / part for part in remote.parts]
            paths = [whole] if whole.is_file() else parts
            if not paths or not all(p.is_file() for p in paths):
                continue
            assert locate_parts(name, filename) == paths
            h_sha, h_md5 = hashlib.sha256(), hashlib.md5()
            for p in paths:
                data = p.read_bytes()
                h_sha.update(data)
                h_md5.update(data)
            assert h_sha.hexdigest() == remote.sha256, f"{name}/{filename}"
            assert remote.md5 is None or h_md5.hexdigest() == remote.md5, f"{name}/{filename}"
            checked += 1
    assert checked >= 8
