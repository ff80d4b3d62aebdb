"""CoreShare: a server's cores divided between the requests running at once."""
from __future__ import annotations

import threading

import pytest
import torch

from xlsearch.indexer.threads import CoreShare


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """torch's count is per thread, but setting it also changes the count new threads start with: restore it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def in_thread(function):
    out = []
    worker = threading.Thread(target=lambda: out.append(function()))
    worker.start()
    worker.join()
    return out[0]


def lone_share(share: CoreShare) -> int:
    """The threads a request gets when it enters ``share`` (on a thread of its own)."""
    def request():
        with share.threads_for_request() as threads:
            return threads
    return in_thread(request)


def test_a_lone_request_runs_on_every_core_and_sets_its_own_thread_only():
    share = CoreShare(cores=4)
    main_threads = torch.get_num_threads()

    def request():
        with share.threads_for_request() as threads:
            return threads, torch.get_num_threads(), share.running

    assert in_thread(request) == (4, 4, 1)
    assert share.running == 0 and torch.get_num_threads() == main_threads


def test_requests_running_at_once_share_the_cores_one_thread_each_at_least():
    share = CoreShare(cores=4)
    entered = [threading.Event() for _ in range(5)]
    release = threading.Event()
    seen: dict[int, tuple[int, int]] = {}

    def request(i: int) -> None:
        with share.threads_for_request() as threads:
            seen[i] = (threads, torch.get_num_threads())
            entered[i].set()
            release.wait(timeout=30)

    workers = []
    for i in range(5):  # one at a time, each entering while the ones before still run
        workers.append(threading.Thread(target=request, args=(i,)))
        workers[-1].start()
        assert entered[i].wait(timeout=30)
    release.set()
    for worker in workers:
        worker.join()
    assert [seen[i] for i in range(5)] == [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    assert share.running == 0
    assert lone_share(share) == 4  # all gone: a lone one gets every core again


def test_the_cap_bounds_a_lone_request_and_a_failure_still_leaves():
    assert lone_share(CoreShare(cap=1, cores=4)) == 1
    assert lone_share(CoreShare(cap=8, cores=2)) == 2

    share = CoreShare(cores=2)

    def failing():
        with pytest.raises(RuntimeError), share.threads_for_request():
            raise RuntimeError("encoder failed")
        return share.running

    assert in_thread(failing) == 0


def test_the_cores_default_to_torch_s_own_count_read_when_the_share_is_made():
    def made_in_a_thread_with(threads: int) -> int:
        torch.set_num_threads(threads)
        return CoreShare().cores

    assert in_thread(lambda: made_in_a_thread_with(3)) == 3
    assert in_thread(lambda: made_in_a_thread_with(1)) == 1
