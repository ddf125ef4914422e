"""The collector setting the clustering processes start with."""

from __future__ import annotations

import gc

from processors.gc_tuning import YOUNG_THRESHOLD, tune_gc


def test_the_young_generation_is_collected_less_often_and_the_rest_kept() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)
