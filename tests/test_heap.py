"""rrcunet.heap: the CLI's glibc malloc settings (applied unless the user set them or opted out) and the
heap reuse of a network pass (set on entry, put back and trimmed on exit, only where configure() set
the threshold)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from rrcunet import heap


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.trims = 0

    def mallopt(self, param, value) -> int:
        self.calls.append((param.value, value.value))
        return 1

    def malloc_trim(self, pad) -> int:
        self.trims += 1
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: fake)
    for name in (*heap.MALLOPT, *heap.USER_VARIABLES, "RRCUNET_MALLOPT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(heap, "_restore", None)
    return fake


def test_both_settings_are_applied_by_default(libc):
    heap.configure()
    assert sorted(libc.calls) == sorted(heap.MALLOPT.values())
    assert heap.active()


def test_a_variable_the_user_set_is_left_to_glibc(libc, monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    heap.configure()
    assert libc.calls == [heap.MALLOPT["MALLOC_MMAP_THRESHOLD_"]]
    assert heap.active()


def test_rrcunet_mallopt_0_changes_nothing(libc, monkeypatch):
    monkeypatch.setenv("RRCUNET_MALLOPT", "0")
    heap.configure()
    with heap.network_pass():
        pass
    assert libc.calls == [] and libc.trims == 0 and not heap.active()


def test_a_c_library_without_mallopt_is_a_no_op(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: object())
    monkeypatch.delenv("RRCUNET_MALLOPT", raising=False)
    heap.configure()  # no AttributeError
    with heap.network_pass():
        pass


def test_the_network_pass_reuses_the_heap_and_puts_the_cli_settings_back(libc):
    heap.configure()
    libc.calls.clear()
    with heap.network_pass():
        assert sorted(libc.calls) == sorted(heap.NETWORK_PASS.items())
        with heap.network_pass():  # nested: nothing more
            pass
        assert len(libc.calls) == len(heap.NETWORK_PASS) and libc.trims == 0
    assert libc.calls[len(heap.NETWORK_PASS):] == [
        (heap.M_MMAP_THRESHOLD, heap.MALLOPT["MALLOC_MMAP_THRESHOLD_"][1]),
        (heap.M_TRIM_THRESHOLD, heap.GLIBC_TRIM_THRESHOLD)]
    assert libc.trims == 1


@pytest.mark.parametrize("variable", heap.USER_VARIABLES)
def test_the_network_pass_leaves_a_threshold_the_user_set(libc, monkeypatch, variable):
    monkeypatch.setenv(variable, str(64 << 20))
    heap.configure()
    libc.calls.clear()
    with heap.network_pass():
        pass
    assert libc.calls == [] and libc.trims == 0


def test_without_configure_the_network_pass_changes_nothing(libc):
    with heap.network_pass():
        pass
    assert libc.calls == [] and libc.trims == 0


def test_the_settings_are_undone_when_the_pass_raises(libc):
    heap.configure()
    with pytest.raises(RuntimeError), heap.network_pass():
        raise RuntimeError("boom")
    assert libc.trims == 1 and libc.calls[-1] == (heap.M_TRIM_THRESHOLD, heap.GLIBC_TRIM_THRESHOLD)


def test_the_network_pass_takes_no_huge_pages_and_gives_them_back(tmp_path):
    """With the real C library, in a child process (the settings are process-wide): inside the block
    the process's no-huge-pages flag is on, and afterwards it is what it was."""
    code = ("from rrcunet import heap\n"
            "heap.configure()\n"
            "before = heap.huge_pages_off()\n"
            "with heap.network_pass():\n"
            "    inside = heap.huge_pages_off()\n"
            "print(before, inside, heap.huge_pages_off())\n")
    env = {k: v for k, v in os.environ.items()
           if k not in (*heap.MALLOPT, *heap.USER_VARIABLES, "RRCUNET_MALLOPT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    before, inside, after = out.split()
    if before == "None":
        pytest.skip("this system has no PR_GET_THP_DISABLE (not Linux, or a kernel before 3.15)")
    assert (before, inside, after) == ("False", "True", "False")


# --------------------------------------------------------------------------------------------
# the cyclic collector during a prediction


@pytest.fixture
def collector():
    """Python's collector as the test found it, put back afterwards."""
    import gc

    before, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(700, 10, 10)
    gc.enable()
    yield gc
    gc.set_threshold(*before)
    (gc.enable if enabled else gc.disable)()


def test_fewer_collections_raises_the_thresholds_and_puts_them_back(collector):
    with heap.fewer_collections():
        assert collector.get_threshold() == heap.FEWER_COLLECTIONS
        with heap.fewer_collections():  # nested: the outer block's settings hold
            assert collector.get_threshold() == heap.FEWER_COLLECTIONS
        assert collector.get_threshold() == heap.FEWER_COLLECTIONS
    assert collector.get_threshold() == (700, 10, 10)


def test_fewer_collections_puts_them_back_when_the_block_raises(collector):
    with pytest.raises(RuntimeError), heap.fewer_collections():
        raise RuntimeError("boom")
    assert collector.get_threshold() == (700, 10, 10)


def test_fewer_collections_leaves_a_collector_that_is_off_or_collects_less_often(collector):
    collector.disable()
    with heap.fewer_collections():
        assert collector.get_threshold() == (700, 10, 10) and not collector.isenabled()
    collector.enable()
    collector.set_threshold(0)  # "off" by threshold
    with heap.fewer_collections():
        assert collector.get_threshold()[0] == 0
    rarer = tuple(2 * t for t in heap.FEWER_COLLECTIONS)
    collector.set_threshold(*rarer)
    with heap.fewer_collections():
        assert collector.get_threshold() == rarer
    assert collector.get_threshold() == rarer


def test_no_huge_pages_sets_the_flag_and_puts_it_back(monkeypatch):
    """Only the huge-page flag changes (no mallopt call); nested blocks keep it off; a process
    without the CLI's settings is left alone."""
    calls = []
    monkeypatch.setattr(heap, "_libc", lambda: _FakeLibc())
    monkeypatch.setattr(heap, "_set_huge_pages_off", lambda libc, off: calls.append(off) or False)
    monkeypatch.setattr(heap, "_restore", {heap.M_MMAP_THRESHOLD: 1})
    with heap.no_huge_pages():
        with heap.no_huge_pages():
            assert calls == [True]
        assert calls == [True]
    assert calls == [True, False]
    monkeypatch.setattr(heap, "_restore", None)
    with heap.no_huge_pages():
        pass
    assert calls == [True, False]


def test_blocks_without_huge_pages_share_one_count_across_threads(libc, monkeypatch):
    """network_pass and no_huge_pages, entered and left out of order (as a cohort's threads do): the
    flag goes off with the first and back with the last, never left off."""
    flag = {"off": False, "changes": 0}

    def set_off(_libc, off):
        before = flag["off"]
        flag["off"], flag["changes"] = off, flag["changes"] + 1
        return before

    monkeypatch.setattr(heap, "_set_huge_pages_off", set_off)
    heap.configure()
    a, b = heap.no_huge_pages(), heap.network_pass()
    a.__enter__()
    b.__enter__()
    assert flag["off"]
    a.__exit__(None, None, None)  # the first one leaves while the other is still inside
    assert flag["off"]
    b.__exit__(None, None, None)
    assert not flag["off"] and flag["changes"] == 2


def test_temporaries_take_effect_only_where_allowed_in_this_thread(libc):
    import threading

    heap.configure()
    before = len(libc.calls)
    with heap.temporaries():
        pass
    assert len(libc.calls) == before  # not allowed: glibc's settings hold
    with heap.temporaries_allowed():
        with heap.temporaries():
            assert len(libc.calls) > before  # the heap-reuse settings
        after = len(libc.calls)

        def elsewhere():
            with heap.temporaries():
                pass

        thread = threading.Thread(target=elsewhere)  # another thread is not allowed by this one
        thread.start()
        thread.join()
        assert len(libc.calls) == after
