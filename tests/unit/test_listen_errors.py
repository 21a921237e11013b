"""node/net/listen.py: the one line an operator reads when a port cannot be opened."""

from __future__ import annotations

import errno
import os

import pytest

from node.net.listen import listen_error


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.EADDRINUSE, "another process holds it"),
        (errno.EACCES, "CAP_NET_BIND_SERVICE"),
        (errno.EADDRNOTAVAIL, "no network interface of this machine has that address"),
    ],
)
def test_each_error_an_operator_meets_says_what_to_do(code: int, hint: str) -> None:
    err = listen_error(OSError(code, os.strerror(code)), "::1", 7400, "node.ws")
    assert str(err).startswith(f"cannot listen on [::1]:7400 (node.ws): {os.strerror(code)}; "), err
    assert hint in str(err)
    assert (err.address, err.key) == ("[::1]:7400", "node.ws")


def test_another_error_is_given_as_the_system_says_it_and_the_wildcard_is_named() -> None:
    err = listen_error(OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS)), "", 7401, "node.swim")
    assert str(err) == f"cannot listen on 0.0.0.0:7401 (node.swim): {os.strerror(errno.ENOBUFS)}"
