"""Shared fixtures: ``one_thread`` for tests of small tensors, and for the slow end-to-end tests the dense synthetic
world and one retrieval model trained on it (the learning test checks that model; the locate test builds on it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from doubles import DENSE_LEARN

# CI sets CROSSVIEW_NO_SKIPS=1 (.ci/run): every test must run there, so a skip (a missing ../shared fixture, a
# missing browser) fails the session and the summary names what was missing. A developer's run may skip, saying why.
NO_SKIPS = os.environ.get("CROSSVIEW_NO_SKIPS") == "1"
_SKIPPED: list[str] = []


def pytest_configure(config) -> None:
    """Under ``pytest -n N`` (pytest-xdist, as ``make test`` runs) each worker owns one core: its affinity is that
    core, so torch and every subprocess it starts (CLI runs, torchrun ranks, the browser) use one thread there and
    the workers never oversubscribe the machine."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > len(cpus):
        return  # more workers than cores: leave placement to the OS
    per = len(cpus) // workers
    index = int(worker.removeprefix("gw"))
    os.sched_setaffinity(0, cpus[index * per:(index + 1) * per])
    import torch

    torch.set_num_threads(per)


# The modules whose tests use the session's dense retrieval model: under pytest-xdist they run in one worker, so the
# model is trained once per session (a test elsewhere that asks for it stops the collection).
DENSE_MODULES = ("tests/test_train_learning.py", "tests/test_locate_e2e.py")


def pytest_collection_modifyitems(config, items) -> None:
    """Longest first: the tests that share the dense retrieval model (the longest chain), the other slow tests,
    then the rest (stable order within each), so that two workers finish together."""
    for item in items:
        if "dense_retrieval_run" in getattr(item, "fixturenames", ()) and \
                item.nodeid.split("::")[0] not in DENSE_MODULES:
            raise pytest.UsageError(f"{item.nodeid} uses dense_retrieval_run: add its module to "
                                    "tests/conftest.py DENSE_MODULES (so one worker trains it once)")

    def rank(item) -> int:
        if item.nodeid.split("::")[0] in DENSE_MODULES:
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items[:] = sorted(items, key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``pytest -n N``: tests go out one at a time in collection order (as sorted above) to whichever worker is
    free, except the DENSE_MODULES, which go together to one worker. (xdist's own ``loadgroup`` does not group
    under pytest 9.2, whose node ids it can no longer tag.)"""
    from xdist.scheduler import LoadScopeScheduling

    class OneTestAtATime(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "dense-retrieval" if nodeid.split("::")[0] in DENSE_MODULES else nodeid

        def _reschedule(self, node) -> None:
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            work = self.assigned_work[node]
            # a worker starts its last test only once it knows the next one, so each keeps one test queued; the
            # one queued behind the dense chain waits long: give it the quickest left (the end of the queue)
            if self._pending_of(work) > 1:
                return
            if any(not done for done in work.get("dense-retrieval", {}).values()):
                self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
            self._assign_work_unit(node)

    return OneTestAtATime(config, log) if config.getvalue("dist") == "load" else None


def pytest_runtest_logreport(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter) -> None:
    if NO_SKIPS and _SKIPPED:
        terminalreporter.section("skips are failures here (CROSSVIEW_NO_SKIPS=1)", red=True)
        for line in _SKIPPED:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus) -> None:
    if NO_SKIPS and _SKIPPED and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED



@pytest.fixture(scope="session")
def _session_threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.fixture(autouse=True)
def _threads_restored(_session_threads):
    """Every test ends with the session's thread count restored, whatever it set (a fixture or library call that
    pins one thread must not slow the rest of the suite down)."""
    import torch

    yield
    torch.set_num_threads(_session_threads)


@pytest.fixture
def free_port() -> int:
    """A TCP port free on this machine now (for a torchrun rendezvous: tests run side by side under xdist)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def one_thread():
    """Small tensors: one thread is faster than several and does not stall when the machine is busy."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _upload(address, photo: Path, fields: dict[str, str]) -> dict:
    """POST ``photo`` with the form ``fields`` to the page's ``/api/locate`` at ``address``: its JSON answer."""
    import http.client
    import json
    import uuid

    b = uuid.uuid4().hex
    body = b"".join(f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
                    for k, v in fields.items())
    body += (f"--{b}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.jpg\"\r\n"
             f"Content-Type: image/jpeg\r\n\r\n").encode() + photo.read_bytes() + f"\r\n--{b}--\r\n".encode()
    conn = http.client.HTTPConnection(*address[:2], timeout=120)
    conn.request("POST", "/api/locate", body=body, headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    resp = conn.getresponse()
    page = json.loads(resp.read())
    assert resp.status == 200, page
    return page


@pytest.fixture
def upload_photo():
    """``upload_photo(server_address, photo, fields)``: the web page's answer to an upload (asserted 200)."""
    return _upload


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _made_once(tmp_path_factory, name: str, make) -> Path:
    """``make(folder)``'s result, made once per session and shared by every pytest-xdist worker: the first worker
    to ask makes it in the session's common temporary folder (under a file lock) while the others wait for it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the folder that every worker's own temporary folder is in
    done = base / f"{name}.done"
    with FileLock(str(base / f"{name}.lock")):
        if not done.exists():
            path = Path(make(base / name))
            done.write_text(str(path))
    return Path(done.read_text())


@pytest.fixture(scope="session")
def tiny_vigor_world(tmp_path_factory) -> Path:
    """The tiny synthetic VIGOR world (seed 0), generated once per session and shared by every test that reads it;
    the session fails at its end if a test wrote into it (a test that writes makes its own)."""
    from crossview.synth import generate

    root = _made_once(tmp_path_factory, "tiny_vigor",
                      lambda d: generate("vigor", d / "vigor", scale="tiny", seed=0))
    before = _tree_state(root)
    yield root
    after = _tree_state(root)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"a test wrote into the shared tiny world: {changed[:10]}"


@pytest.fixture(scope="session")
def dense_world(tmp_path_factory) -> Path:
    """The dense synthetic VIGOR world (seed 1), generated once per session (read only)."""
    from crossview.synth import generate

    return _made_once(tmp_path_factory, "dense", lambda d: generate("vigor", d / "vigor", scale="dense", seed=1))


@pytest.fixture(scope="session")
def dense_retrieval_run(dense_world, tmp_path_factory) -> Path:
    from crossview.train.loop import train
    from crossview.train.presets import resolve_config

    return Path(train(resolve_config("synthetic-cpu", DENSE_LEARN), dense_world,
                      tmp_path_factory.mktemp("dense_run") / "real"))
