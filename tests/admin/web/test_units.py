"""Pieces of the dashboard without a server: masking, links, the serve command's checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobboard.admin.web.masking import MASK, is_secret_key, mask
from jobboard.admin.web.snapshot import links_of
from jobboard.base import Job

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "key",
    ["password", "db_password", "DB-PASSWORD", "apiKey", "api_key", "X-Auth-Token", "secret",
     "aws.secret_access_key", "dbpassword", "credentials", "private_key", "accessToken"],
)  # fmt: skip
def test_secret_keys_are_recognised(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["monkey", "keyboard", "image", "name", "tokenizer_model", "path"])
def test_plain_keys_are_kept(key):
    assert not is_secret_key(key)


def test_mask_is_recursive_and_keeps_the_shape():
    value = {
        "user": "ann",
        "password": {"nested": "x"},
        "items": [{"token": "t", "n": 1}, ["a", {"secret": 1}]],
        "dsn": "postgres://ann:pw@db:5432/app",
    }
    assert mask(value) == {
        "user": "ann",
        "password": MASK,
        "items": [{"token": MASK, "n": 1}, ["a", {"secret": MASK}]],
        "dsn": "postgres://ann:***@db:5432/app",
    }
    assert value["password"] == {"nested": "x"}  # the original is untouched


def test_links_come_from_details_and_store():
    job = Job(
        id="j1", name="n", flow="f", store={"parent_job": "p2"},
        details={"retry_of": "p1", "children": [{"id": "c1"}, "c2", "j1"]},
    )  # fmt: skip
    assert links_of(job) == (["p1", "p2"], ["c1", "c2"])


def test_serve_refuses_a_short_admin_token(tmp_path):
    url = f"sqlite://{tmp_path / 'b.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "jobboard", "serve", "--board", url, "--admin-token", "short"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "at least 16 characters" in done.stderr
