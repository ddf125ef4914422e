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


def test_a_topic_config_made_by_others_is_warned_of_and_the_processors_go_on(
        make_settings, caplog) -> None:
    """An incidents topic an operator made not compacted and with a 1 MB limit, on a real
    Kafka (asked here of the embedded broker as of one): the processors refused to start
    for it, as for a clean topic of two partitions, although neither changes the
    clustering (only what a copy of the topics keeps, and which messages the broker
    takes). They warn, with the command that mends it, and go on."""
    from processors.app import warn_of_topic_configs

    settings = make_settings().model_copy(update={"kafka_embedded": False})
    ensure_topics(settings, [TopicSpec(settings.topic_incidents, settings.incident_partitions,
                                       {"cleanup.policy": "delete",
                                        "max.message.bytes": "1048588"})])
    ensure_topics(settings)
    with caplog.at_level("WARNING", logger="processors.app"):
        warn_of_topic_configs(settings)
    [warning] = [r for r in caplog.records if r.name == "processors.app"]
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith(
        f"topic {settings.topic_incidents} has cleanup.policy=delete, not compact:")
    assert "--add-config cleanup.policy=compact,max.message.bytes=8388608" in warning.getMessage()
