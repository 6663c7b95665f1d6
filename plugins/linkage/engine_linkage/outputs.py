"""The linkage task's outputs: the test matches as parquet, and as a tracking artifact.

Mixed into :class:`engine_linkage.task.LinkageTask`, which provides ``data``, ``model_cfg`` and ``_test_output``
(the matches kept by ``evaluate(model, "test")``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.files import atomic_path


class LinkageOutputs:
    """``write_matches`` and ``log_artifacts`` of the linkage task."""

    def write_matches(self, path: str | Path) -> Path:
        """The test matches as parquet: ``left_id, right_id, score, cluster`` (after ``evaluate(model, 'test')``)."""
        import polars as pl

        if self._test_output is None:
            raise RuntimeError("write_matches: evaluate the test split first")
        o, d = self._test_output, self.data
        df = pl.DataFrame({"left_id": [d.left.ids[i] for i in o["left"]],
                           "right_id": [d.right_table.ids[i] for i in o["right"]],
                           "score": o["score"].astype(np.float64), "cluster": o["cluster"].astype(np.int64)})
        with atomic_path(path) as tmp:
            df.write_parquet(tmp)
        return Path(path)

    def log_artifacts(self, model, tracker) -> None:
        if self._test_output is None:
            return
        import tempfile

        if self.model_cfg.matches_out:
            tracker.log_artifact(self.write_matches(self.model_cfg.matches_out), "linkage")
        elif getattr(tracker, "run_id", None) is not None:
            with tempfile.TemporaryDirectory() as tmp:
                tracker.log_artifact(self.write_matches(Path(tmp) / "matches.parquet"), "linkage")
