"""The rotoken C ABI driven from Python with ctypes: issue, rotate, retry
within the grace window, reuse detection, revocation, bad arguments (None,
invalid UTF-8, a 1 MB token), four threads on one handle, close under them.

usage: python3 test_rotoken.py PATH/TO/librotoken_ffi.so DIR
Exits non-zero on the first failed check; prints "python: N passed, 0 failed".
"""

import ctypes
import os
import sys
import threading
import time
from ctypes import byref, c_size_t, c_void_p

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rotoken_ctypes as rt  # noqa: E402
from rotoken_ctypes import RotokenError  # noqa: E402


def expect_error(status, f, *args, **kwargs):
    try:
        f(*args, **kwargs)
    except RotokenError as e:
        assert e.status == status, f"{f.__name__}: got {e.code} ({e.status}), want {status}: {e.message}"
        assert e.message, f"{f.__name__}: {e.code} without a message"
        return e
    raise AssertionError(f"{f.__name__} succeeded; want status {status}")


def test_status_names(lib, _dir):
    assert lib.status_name(rt.OK) == "ok"
    assert lib.status_name(rt.REUSE_DETECTED) == "reuse_detected"
    assert lib.status_name(rt.LOCKED) == "locked"
    assert lib.status_name(rt.CLOSED) == "closed"
    assert lib.status_name(999) == "unknown"
    assert lib.lib.rotoken_version().decode().count(".") == 2
    p = lib.lib.rotoken_policy_default()
    assert p.grace_ms == 30_000 and p.durability == rt.DURABILITY_IMMEDIATE and p.max_generations == 1_000_000


def test_lifecycle(lib, d):
    keys, db = os.path.join(d, "keys"), os.path.join(d, "tokens.redb")
    expect_error(rt.KEYS_MISSING, lib.open, db, keys)
    lib.keys_generate(keys)
    expect_error(rt.KEYS_EXIST, lib.keys_generate, keys)
    store = lib.open(db, keys)
    expect_error(rt.LOCKED, lib.open, db, keys)  # one process (here: one handle) per file

    first = store.issue("alice", "web", "openid offline_access", metadata=b"\x00session\xff")
    assert first["refresh_token"].startswith("rt1_") and first["generation"] == 0
    info = store.introspect(first["refresh_token"])
    assert info["active"] and info["sub"] == "alice" and info["scope"] == "offline_access openid"

    second = store.rotate(first["refresh_token"], "web")
    assert second["generation"] == 1 and not second["retried"] and second["family"] == first["family"]
    assert second["subject"] == "alice" and second["metadata"] == b"\x00session\xff"

    # A second tab retries within the grace window: the same successor.
    retry = store.rotate(first["refresh_token"], "web")
    assert retry["retried"] and retry["refresh_token"] == second["refresh_token"]

    expect_error(rt.CLIENT_MISMATCH, store.rotate, second["refresh_token"], "mobile")
    expect_error(rt.SCOPE_WIDENED, store.rotate, second["refresh_token"], "web", scope="openid admin")
    third = store.rotate(second["refresh_token"], "web", scope="openid")
    assert third["generation"] == 2 and third["scope"] == "openid"

    # The first token again, two generations old: reuse; the family is revoked.
    expect_error(rt.REUSE_DETECTED, store.rotate, first["refresh_token"], "web")
    expect_error(rt.REVOKED, store.rotate, third["refresh_token"], "web")
    assert store.introspect(third["refresh_token"]) == {"active": False}
    expect_error(rt.INVALID_TOKEN, store.rotate, "rt1_nope", "web")

    # Revocations.
    a = store.issue("bob", "web", "openid")
    b = store.issue("bob", "mobile", "openid")
    c = store.issue("carol", "mobile", "openid")
    e = store.issue("dave", "web", "openid")
    assert store.revoke_token(a["refresh_token"]) == 1
    assert store.revoke_token(a["refresh_token"]) == 0
    expect_error(rt.REVOKED, store.rotate, a["refresh_token"], "web")
    assert store.revoke_family(e["family"]) == 1
    expect_error(rt.INVALID_INPUT, store.revoke_family, "xyz")
    assert store.revoke_subject("bob") == 1
    expect_error(rt.REVOKED, store.rotate, b["refresh_token"], "mobile")
    assert store.revoke_client("mobile") == 1
    expect_error(rt.REVOKED, store.rotate, c["refresh_token"], "mobile")

    assert store.gc(100) == {"removed": 0, "rescheduled": 0, "events_removed": 0, "more": False}
    report = store.check()
    assert report["problem_count"] == 0 and report["problems"] is None and report["families"] == 5

    store.close()
    expect_error(rt.CLOSED, store.introspect, a["refresh_token"])
    expect_error(rt.CLOSED, store.close)
    store = lib.open(db, keys)  # the file was released
    assert store.check()["families"] == 5
    store.close()


def test_grace_window_ends(lib, d):
    keys, db = os.path.join(d, "keys"), os.path.join(d, "grace.redb")
    lib.keys_generate(keys)
    policy = lib.lib.rotoken_policy_default()
    # A 1 ms window and a sleep of at least 20 ms: the retry comes after the
    # window however slow the machine. (A retry within the default 30 s
    # window is tested in test_lifecycle.)
    policy.grace_ms = 1
    store = lib.open(db, keys, policy)
    first = store.issue("frank", "web", "openid")
    second = store.rotate(first["refresh_token"], "web")
    time.sleep(0.02)
    expect_error(rt.REUSE_DETECTED, store.rotate, first["refresh_token"], "web")
    expect_error(rt.REVOKED, store.rotate, second["refresh_token"], "web")
    bad = lib.lib.rotoken_policy_default()
    bad.durability = 9
    expect_error(rt.INVALID_INPUT, lib.open, os.path.join(d, "other.redb"), keys, bad)
    store.close()


def test_bad_arguments(lib, d):
    keys, db = os.path.join(d, "keys"), os.path.join(d, "tokens.redb")
    lib.keys_generate(keys)
    store = lib.open(db, keys)
    token = store.issue("alice", "web", "openid")["refresh_token"]
    bad_utf8 = b"caf\xc3\x28"
    one_mb = b"rt1_" + b"A" * (1024 * 1024 - 4)

    # None is NULL.
    expect_error(rt.NULL_POINTER, lib.open, None, keys)
    expect_error(rt.NULL_POINTER, lib.open, db, None)
    expect_error(rt.NULL_POINTER, store.issue, None, "web", "openid")
    expect_error(rt.NULL_POINTER, store.issue, "alice", None, "openid")
    expect_error(rt.NULL_POINTER, store.issue, "alice", "web", None)
    expect_error(rt.NULL_POINTER, store.rotate, None, "web")
    expect_error(rt.NULL_POINTER, store.rotate, token, None)
    expect_error(rt.NULL_POINTER, store.introspect, None)
    expect_error(rt.NULL_POINTER, store.revoke_token, None)
    expect_error(rt.NULL_POINTER, store.revoke_family, None)
    expect_error(rt.NULL_POINTER, store.revoke_subject, None)
    expect_error(rt.NULL_POINTER, store.revoke_client, None)
    expect_error(rt.NULL_POINTER, lib.call, "rotoken_rotate", store.handle, token.encode(), b"web", None, None, None)
    expect_error(rt.NULL_POINTER, lib.call, "rotoken_check", store.handle, None)
    expect_error(rt.NULL_POINTER, lib.call, "rotoken_close", None)

    # Invalid UTF-8.
    expect_error(rt.INVALID_UTF8, store.issue, bad_utf8, "web", "openid")
    expect_error(rt.INVALID_UTF8, store.issue, "alice", bad_utf8, "openid")
    expect_error(rt.INVALID_UTF8, store.rotate, bad_utf8, "web")
    expect_error(rt.INVALID_UTF8, store.rotate, token, "web", scope=bad_utf8)
    expect_error(rt.INVALID_UTF8, store.introspect, bad_utf8)
    expect_error(rt.INVALID_UTF8, store.revoke_subject, bad_utf8)
    expect_error(rt.INVALID_UTF8, lib.open, bad_utf8, keys)

    # A 1 MB token, and other oversize arguments.
    expect_error(rt.TOO_LARGE, store.rotate, one_mb, "web")
    expect_error(rt.TOO_LARGE, store.introspect, one_mb)
    expect_error(rt.TOO_LARGE, store.revoke_token, one_mb)
    expect_error(rt.TOO_LARGE, store.revoke_family, one_mb)
    expect_error(rt.TOO_LARGE, store.issue, "s" * 2000, "web", "openid")
    expect_error(rt.TOO_LARGE, store.issue, "alice", "web", "openid", metadata=b"m" * 20000)
    expect_error(rt.TOO_LARGE, lib.open, one_mb, keys)

    # Refused values.
    expect_error(rt.INVALID_INPUT, store.issue, "", "web", "openid")
    expect_error(rt.INVALID_INPUT, store.issue, "alice", "web", 'open"id')
    expect_error(rt.INVALID_TOKEN, store.rotate, "", "web")

    # A made-up handle is "closed", never a crash.
    fake = rt.Store(lib, c_void_p(0x4242))
    expect_error(rt.CLOSED, fake.introspect, token)
    expect_error(rt.CLOSED, fake.close)

    # A NULL error out-parameter is allowed.
    n = c_size_t()
    assert lib.lib.rotoken_revoke_subject(store.handle, None, byref(n), None) == rt.NULL_POINTER

    # After all of that the real token still rotates: nothing was changed.
    assert store.rotate(token, "web")["generation"] == 1
    store.close()


def test_four_threads_one_handle(lib, d):
    keys, db = os.path.join(d, "keys"), os.path.join(d, "threads.redb")
    lib.keys_generate(keys)
    store = lib.open(db, keys)
    tokens = [store.issue(f"user-{i}", f"client-{i}", "openid")["refresh_token"] for i in range(4)]
    failures = []
    rounds = 30

    def rotate(i):
        try:
            for _ in range(rounds):
                tokens[i] = store.rotate(tokens[i], f"client-{i}")["refresh_token"]
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=rotate, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    for t in tokens:
        assert store.introspect(t)["generation"] == rounds

    # Close under running threads: each ends with CLOSED, nothing crashes.
    outcomes = []
    started = threading.Barrier(5)

    def until_closed(i):
        started.wait()
        try:
            while True:
                tokens[i] = store.rotate(tokens[i], f"client-{i}")["refresh_token"]
        except RotokenError as e:
            outcomes.append(e.status)

    threads = [threading.Thread(target=until_closed, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.05)
    store.close()
    for t in threads:
        t.join()
    assert outcomes == [rt.CLOSED] * 4, outcomes
    store = lib.open(db, keys)
    for t in tokens:
        assert store.introspect(t)["active"]
    assert store.check()["problem_count"] == 0
    store.close()


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    lib = rt.Rotoken(sys.argv[1])
    tests = [test_status_names, test_lifecycle, test_grace_window_ends, test_bad_arguments,
             test_four_threads_one_handle]
    for i, test in enumerate(tests):
        d = os.path.join(sys.argv[2], f"{i}-{test.__name__}")
        os.makedirs(d)
        test(lib, d)
        print(f"ok   {test.__name__}")
    print(f"python: {len(tests)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
