"""What a method prints or raises reaches the terminal without its control characters."""

from __future__ import annotations

from unlearn_audit.plugin.case import printable


def test_control_characters_are_escaped_but_lines_and_tabs_kept() -> None:
    fake = "\x1b[1A\x1b[2K\x1b[32mPASSED\x1b[0m\r\x00done\n\tnext line é 中"
    shown = printable(fake)
    assert "\x1b" not in shown and "\r" not in shown and "\x00" not in shown
    assert shown == "\\x1b[1A\\x1b[2K\\x1b[32mPASSED\\x1b[0m\\r\\x00done\n\tnext line é 中"
