"""No secret of a Redis board URL appears in an error (issue 9 item 10, Redis part)."""

from __future__ import annotations

import pytest

from jobboard import BadURL
from jobboard.redis import RedisBoard
from jobboard.urls import redact_url


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6390/0?password=topsecret&bogus=1",
        "redis://127.0.0.1:6390/0?bogus=1&PASSWORD=topsecret",
        "redis://127.0.0.1:6390/0?password=topsecret&lease=soon",
        "redis://127.0.0.1:6390/0?password=topsecret&socket_timeout=never",
        "redis://alice:topsecret@127.0.0.1:6390/0?bogus=1",
        "rediss://127.0.0.1:6390/0?password=topsecret&ssl_cert_reqs=maybe",
        "redis://127.0.0.1:6390/0?password=topsecret&ssl_ca_certs=/ca.pem",
    ],
)
def test_url_errors_never_show_the_password(url):
    with pytest.raises(BadURL) as info:
        RedisBoard.from_url(url)
    assert "topsecret" not in str(info.value)
    assert "***" in str(info.value)


def test_redacted_url_keeps_the_other_options():
    shown = redact_url("redis://u:pw1@h:1/0?namespace=a&password=pw2&lease=2")
    assert shown == "redis://u:***@h:1/0?namespace=a&password=***&lease=2"
    assert redact_url("redis://h/0?namespace=a") == "redis://h/0?namespace=a"
