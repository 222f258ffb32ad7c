"""Study storage URLs: the database URLs of the README open as written."""

import socket
import sys
import uuid

import optuna
import pytest

from dnntune.errors import ConfigError
from dnntune.search.storage import open_storage, study_names

README_URL = "postgresql://postgres@127.0.0.1/test"  # exactly as in README.md and docs/strategies.md


def _server_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
        return True
    except OSError:
        return False


needs_server = pytest.mark.skipif(not _server_up(), reason="PostgreSQL on 127.0.0.1:5432 not reachable")


def _create_and_delete_a_study(storage) -> None:
    name = f"dnntune-test-{uuid.uuid4().hex[:12]}"
    study = optuna.create_study(study_name=name, storage=storage)
    try:
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        assert name in study_names(storage)
        assert len(optuna.load_study(study_name=name, storage=storage).trials) == 1
    finally:
        optuna.delete_study(study_name=name, storage=storage)
    assert name not in study_names(storage)


@needs_server
def test_the_readme_postgresql_url_opens():
    storage = open_storage(README_URL)
    assert storage.url.startswith("postgresql+psycopg://")  # psycopg 3 comes with dnntune[postgres] / [dev]
    _create_and_delete_a_study(storage)


@needs_server
def test_a_plain_postgresql_url_falls_back_to_psycopg2_without_psycopg3(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` raises ImportError
    storage = open_storage(README_URL)
    assert storage.url.startswith("postgresql+psycopg2://")
    _create_and_delete_a_study(storage)


def test_a_plain_postgresql_url_without_any_driver_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(ConfigError, match=r"--storage: .*postgresql://.*pip install 'dnntune\[postgres\]'"):
        open_storage(README_URL)
