"""The settings mark of a ZooKeeper board: a conductor re-reads pauses and
schedules only when a registration saw the ``settings`` node move."""

from __future__ import annotations

import pytest

from jobboard import schedules

pytestmark = pytest.mark.zookeeper


def test_a_registration_sees_the_settings_move_only_on_a_pause_or_schedule_write(
    zookeeper_board_factory,
):
    # Given a conductor's board that registered once
    board = zookeeper_board_factory()
    admin = zookeeper_board_factory()
    board.register_entity("c1", "conductor", {})
    first = board.settings_version()
    assert first is not None
    # When it registers again with no settings written, the mark stays
    board.register_entity("c1", "conductor", {})
    assert board.settings_version() == first
    # Then a pause written by another board moves it at the next registration
    admin.pause_flow("f", reason="maintenance")
    board.register_entity("c1", "conductor", {})
    paused = board.settings_version()
    assert paused != first
    # And so do a resume, a new schedule and its removal
    seen = {first, paused}
    for write in (
        lambda: admin.resume_flow("f"),
        lambda: schedules.add_schedule(admin, "nightly", "f", every=3600.0),
        lambda: admin.remove_schedule("nightly"),
    ):
        write()
        board.register_entity("c1", "conductor", {})
        assert board.settings_version() not in seen
        seen.add(board.settings_version())


def test_a_zookeeper_board_does_not_tell_leases_on_registration(zookeeper_board_factory):
    # Idle ZooKeeper boards learn of lease ends from their watches, not the heartbeat
    assert zookeeper_board_factory().LEASES_ON_REGISTER is False
