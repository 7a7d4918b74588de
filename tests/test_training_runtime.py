"""raise_malloc_thresholds: the opt-out, the mallopt calls, the failure paths, idempotence."""

from __future__ import annotations

import os

import pytest

from tucker_ref.training import runtime


class FakeLibc:
    """Records mallopt calls; answers with ``result`` (glibc: 1 on success, 0 on error)."""

    def __init__(self, result=1):
        self.calls = []
        self.result = result

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.result


@pytest.fixture
def fake(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(runtime, "_glibc", lambda: libc)
    monkeypatch.delenv(runtime.KEEP_MALLOC_ENV, raising=False)
    return libc


def test_sets_both_thresholds_and_is_idempotent(fake):
    assert runtime.raise_malloc_thresholds() is True
    first = list(fake.calls)
    assert sorted(first) == sorted([(-3, runtime.MMAP_THRESHOLD), (-1, runtime.TRIM_THRESHOLD)])
    assert runtime.raise_malloc_thresholds() is True
    assert fake.calls == first + first


@pytest.mark.parametrize("value", ["1", "yes"])
def test_env_opt_out_calls_nothing(fake, monkeypatch, value):
    monkeypatch.setenv(runtime.KEEP_MALLOC_ENV, value)
    assert runtime.raise_malloc_thresholds() is False
    assert fake.calls == []


@pytest.mark.parametrize("value", ["", "0"])
def test_empty_or_zero_env_does_not_opt_out(fake, monkeypatch, value):
    monkeypatch.setenv(runtime.KEEP_MALLOC_ENV, value)
    assert runtime.raise_malloc_thresholds() is True


def test_rejected_value_returns_false(fake):
    fake.result = 0
    assert runtime.raise_malloc_thresholds() is False
    assert len(fake.calls) == 2


def test_without_glibc_returns_false(monkeypatch):
    monkeypatch.setattr(runtime, "_glibc", lambda: None)
    monkeypatch.delenv(runtime.KEEP_MALLOC_ENV, raising=False)
    assert runtime.raise_malloc_thresholds() is False


def test_real_call_returns_the_same_bool_twice(monkeypatch):
    monkeypatch.delenv(runtime.KEEP_MALLOC_ENV, raising=False)
    first = runtime.raise_malloc_thresholds()
    assert isinstance(first, bool)
    assert runtime.raise_malloc_thresholds() is first
    if hasattr(os, "confstr") and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or ""):
        assert first is True


def test_train_calls_it(monkeypatch, tmp_path):
    from tucker_ref.training import TrainConfig, train, trainer

    calls = []
    monkeypatch.setattr(trainer, "raise_malloc_thresholds", lambda: calls.append(1) or True)
    train(TrainConfig(method="full", epochs=1, train_subset=64, test_subset=32, batch_size=32, quiet=True,
                      plots=False, out=str(tmp_path / "run")))
    assert calls == [1]
