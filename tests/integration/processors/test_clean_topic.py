"""The processors on a clean-articles topic made before newsflow made it, with more than
the one partition clustering needs (by an operator, or by a reader the broker let make it
with its default count)."""

from __future__ import annotations

import pytest

from newsflow.kafka import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


def test_the_processors_do_not_start_on_a_clean_topic_of_two_partitions(
        make_settings, start_role) -> None:
    """They started and clustered on it: two workers held a partition each, each clustered
    only the articles of its own, and one event became two incidents (ecbplus-dev: 86
    incidents where one partition gave 47), with no word anywhere."""
    settings = make_settings()
    ensure_topics(settings, [TopicSpec(settings.topic_clean, 2, {})])
    ensure_topics(settings)
    worker = start_role(settings, "process")
    assert worker.process.wait(timeout=120) == 1, worker.log()
    log = worker.log()
    assert (f"ERROR   processors.app: topic {settings.topic_clean} has 2 partitions, and"
            " incident clustering needs it to have 1") in log, log
    assert "run `newsflow topics` to make it again with 1 partition" in log, log
    assert "partitions held" not in log, log  # (it never joined the group)
