"""Counting what a consumer group has left unread, without a broker."""

from __future__ import annotations

from kafka import TopicPartition

from newsflow.drain import behind_where_read

INCIDENTS = [TopicPartition("newsflow.incidents", p) for p in range(2)]
MEMBERS = TopicPartition("newsflow.incident-members", 0)


def test_a_reader_of_one_topic_has_not_left_the_other_unread() -> None:
    marks = {INCIDENTS[0]: 10, INCIDENTS[1]: 5, MEMBERS: 40}
    assert behind_where_read({INCIDENTS[0]: 7, INCIDENTS[1]: 5}, marks) == 3


def test_a_partition_never_committed_on_is_unread_from_its_start() -> None:
    marks = {INCIDENTS[0]: 10, INCIDENTS[1]: 5, MEMBERS: 40}
    assert behind_where_read({INCIDENTS[0]: 10, MEMBERS: 38}, marks) == 5 + 2
