"""Synthetic interaction data the repository generates itself (quickstart, tests): no licence, no download.

Users and items belong to latent communities; each user draws most of their items from their own community, by a
Zipf-like popularity, and the rest from the whole catalogue. A recommender that learns the communities beats
popularity by a wide margin, so a quickstart run shows whether training works.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from ..components import ComponentConfig
from ..hookspecs import hookimpl
from .sources import LightGCNTxtSource


def generate_interactions(num_users: int, num_items: int, per_user: int, communities: int, in_community: float,
                          seed: int) -> list[np.ndarray]:
    """One sorted array of distinct item ids per user."""
    rng = np.random.default_rng(seed)
    item_comm = rng.integers(0, communities, num_items)
    user_comm = rng.integers(0, communities, num_users)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    popularity = popularity[rng.permutation(num_items)]
    members = [np.flatnonzero(item_comm == c) for c in range(communities)]
    out = []
    for u in range(num_users):
        n = max(3, int(rng.poisson(per_user)))
        own = members[user_comm[u]]
        n_own = min(len(own), int(round(n * in_community)))
        p_own = popularity[own] / popularity[own].sum()
        picked = set(rng.choice(own, size=n_own, replace=False, p=p_own).tolist())
        while len(picked) < n:
            picked.add(int(rng.choice(num_items, p=popularity / popularity.sum())))
        out.append(np.array(sorted(picked)))
    return out


def write_lightgcn_splits(path: str | Path, rows: list[np.ndarray], ratios=(0.8, 0.1, 0.1), seed: int = 0) -> None:
    """Split each user's items at random into train/valid/test files, written atomically as one directory."""
    path = Path(path)
    rng = np.random.default_rng(seed + 1)
    lines: dict[str, list[str]] = {"train.txt": [], "valid.txt": [], "test.txt": []}
    for u, items in enumerate(rows):
        items = rng.permutation(items)
        n_test = max(1, int(round(len(items) * ratios[2])))
        n_valid = max(1, int(round(len(items) * ratios[1])))
        parts = {"test.txt": items[:n_test], "valid.txt": items[n_test : n_test + n_valid],
                 "train.txt": items[n_test + n_valid :]}
        for name, part in parts.items():
            lines[name].append(" ".join(map(str, [u, *sorted(part.tolist())])))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    for name, content in lines.items():
        (tmp / name).write_text("\n".join(content) + "\n", encoding="utf-8")
    try:
        os.replace(tmp, path)
    except OSError:  # another process won the race: keep theirs
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


class SyntheticCFSource(LightGCNTxtSource):
    """Generated community-structured interactions, written once to ``path`` in LightGCN format, then read."""

    name: ClassVar[str] = "synthetic_cf"

    class Config(ComponentConfig):
        path: str = Field(description="directory the generated train/valid/test files are written to and read from")
        num_users: int = Field(1000, ge=10)
        num_items: int = Field(800, ge=10)
        per_user: int = Field(30, ge=5, description="mean interactions per user")
        communities: int = Field(10, ge=1)
        in_community: float = Field(0.8, ge=0, le=1, description="share of a user's items from their community")
        seed: int = 7

    def __init__(self, path: str, num_users: int = 1000, num_items: int = 800, per_user: int = 30,
                 communities: int = 10, in_community: float = 0.8, seed: int = 7) -> None:
        super().__init__(path, train="train.txt", test="test.txt", valid="valid.txt")
        self.params = dict(num_users=num_users, num_items=num_items, per_user=per_user, communities=communities,
                           in_community=in_community, seed=seed)

    def load(self):
        if not (Path(self.path) / "train.txt").is_file():
            write_lightgcn_splits(self.path, generate_interactions(**self.params), seed=self.params["seed"])
        return super().load()


@hookimpl
def register_data_sources(register):
    register(SyntheticCFSource)
