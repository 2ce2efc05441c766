"""A ctypes binding of the rotoken C ABI (include/rotoken.h), used by the tests.

Load it with `Rotoken(path_to_librotoken_ffi_so)`. Each result struct is
copied into Python values and then cleared with its rotoken_*_clear
function, so the library's buffers are zeroized and freed at once (the
Python `str` copies are not zeroized: Python cannot promise that).
"""

import ctypes
from ctypes import (POINTER, Structure, byref, c_bool, c_char, c_char_p, c_int, c_int64, c_size_t, c_uint32,
                    c_uint64, c_uint8, c_void_p)

# rotoken_status values (stable; see the header).
OK = 0
INVALID_INPUT = 1
NULL_POINTER = 2
INVALID_UTF8 = 3
TOO_LARGE = 4
CLOSED = 5
PANIC = 6
INTERNAL = 7
LOCKED = 10
NOT_ROTOKEN = 11
UNSUPPORTED_SCHEMA = 12
WRONG_KEYS = 13
KEYS_MISSING = 14
KEYS_EXIST = 15
KEYS_INVALID = 16
KEYS_IO = 17
KEYS = 18
INVALID_TOKEN = 20
UNKNOWN_TOKEN = 21
REVOKED = 22
EXPIRED = 23
REUSE_DETECTED = 24
DIVERGED = 25
CLIENT_MISMATCH = 26
CONFIRMATION_MISMATCH = 27
SCOPE_WIDENED = 28
TOO_MANY_GENERATIONS = 29
STORAGE_ERROR = 30
CORRUPT = 31
RANDOM_FAILED = 32

DURABILITY_IMMEDIATE = 0
DURABILITY_RELAXED = 1


class Policy(Structure):
    _fields_ = [("grace_ms", c_uint64), ("idle_lifetime_ms", c_uint64), ("absolute_lifetime_ms", c_uint64),
                ("revoked_retention_ms", c_uint64), ("event_retention_ms", c_uint64),
                ("max_generations", c_uint32), ("durability", c_uint32), ("relaxed_flush_every", c_uint32)]


# Owned `char *` fields are declared c_void_p, not c_char_p: ctypes would
# turn a c_char_p field into a bytes copy and lose the pointer to free.
class Issued(Structure):
    _fields_ = [("refresh_token", c_void_p), ("family", c_char * 33), ("generation", c_uint32),
                ("expires_at", c_int64)]


class Rotated(Structure):
    _fields_ = [("refresh_token", c_void_p), ("family", c_char * 33), ("generation", c_uint32),
                ("expires_at", c_int64), ("retried", c_bool), ("subject", c_void_p), ("client_id", c_void_p),
                ("scope", c_void_p), ("confirmation", c_void_p), ("metadata", c_void_p),
                ("metadata_len", c_size_t)]


class Introspection(Structure):
    _fields_ = [("active", c_bool), ("scope", c_void_p), ("client_id", c_void_p), ("sub", c_void_p),
                ("cnf_jkt", c_void_p), ("exp", c_int64), ("iat", c_int64), ("family", c_char * 33),
                ("generation", c_uint32)]


class GcReport(Structure):
    _fields_ = [("removed", c_size_t), ("rescheduled", c_size_t), ("events_removed", c_size_t), ("more", c_bool)]


class CheckReport(Structure):
    _fields_ = [("families", c_size_t), ("active", c_size_t), ("index_entries", c_size_t), ("events", c_size_t),
                ("problem_count", c_size_t), ("problems", c_void_p)]


class RotokenError(Exception):
    """A call returned a status other than ROTOKEN_STATUS_OK."""

    def __init__(self, status, code, message):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _text(p):
    return None if not p else ctypes.string_at(p).decode()


def _arg(s):
    """str -> UTF-8 bytes; bytes and None pass through (None is NULL)."""
    return s.encode() if isinstance(s, str) else s


class Rotoken:
    """The library, with argument and result types declared."""

    def __init__(self, path):
        lib = self.lib = ctypes.CDLL(path)
        err = POINTER(c_void_p)
        handle = c_void_p
        sigs = {
            "rotoken_status_name": ([c_int], c_char_p),
            "rotoken_version": ([], c_char_p),
            "rotoken_policy_default": ([], Policy),
            "rotoken_keys_generate": ([c_char_p, err], c_int),
            "rotoken_open": ([c_char_p, c_char_p, POINTER(Policy), POINTER(handle), err], c_int),
            "rotoken_close": ([handle, err], c_int),
            "rotoken_issue": ([handle, c_char_p, c_char_p, c_char_p, c_char_p, POINTER(c_uint8), c_size_t,
                               POINTER(Issued), err], c_int),
            "rotoken_rotate": ([handle, c_char_p, c_char_p, c_char_p, c_char_p, POINTER(Rotated), err], c_int),
            "rotoken_introspect": ([handle, c_char_p, POINTER(Introspection), err], c_int),
            "rotoken_revoke_token": ([handle, c_char_p, POINTER(c_size_t), err], c_int),
            "rotoken_revoke_family": ([handle, c_char_p, POINTER(c_size_t), err], c_int),
            "rotoken_revoke_subject": ([handle, c_char_p, POINTER(c_size_t), err], c_int),
            "rotoken_revoke_client": ([handle, c_char_p, POINTER(c_size_t), err], c_int),
            "rotoken_gc": ([handle, c_size_t, POINTER(GcReport), err], c_int),
            "rotoken_check": ([handle, POINTER(CheckReport), err], c_int),
            "rotoken_string_free": ([c_void_p], None),
            "rotoken_bytes_free": ([c_void_p], None),
            "rotoken_issued_clear": ([POINTER(Issued)], None),
            "rotoken_rotated_clear": ([POINTER(Rotated)], None),
            "rotoken_introspection_clear": ([POINTER(Introspection)], None),
            "rotoken_check_report_clear": ([POINTER(CheckReport)], None),
        }
        for name, (args, res) in sigs.items():
            f = getattr(lib, name)
            f.argtypes = args
            f.restype = res

    def status_name(self, status):
        return self.lib.rotoken_status_name(status).decode()

    def call(self, name, *args):
        """Calls `name(*args, &error)`; raises RotokenError unless it returns OK."""
        error = c_void_p()
        status = getattr(self.lib, name)(*args, byref(error))
        message = _text(error.value)
        self.lib.rotoken_string_free(error)
        if status != OK:
            raise RotokenError(status, self.status_name(status), message)
        assert message is None, f"{name} succeeded with an error message: {message}"

    def keys_generate(self, path):
        self.call("rotoken_keys_generate", _arg(path))

    def open(self, db, keys, policy=None):
        handle = c_void_p()
        self.call("rotoken_open", _arg(db), _arg(keys), byref(policy) if policy else None, byref(handle))
        return Store(self, handle)


class Store:
    """One open database (a `rotoken_handle *`)."""

    def __init__(self, rotoken, handle):
        self.rt = rotoken
        self.lib = rotoken.lib
        self.handle = handle

    def close(self):
        self.rt.call("rotoken_close", self.handle)

    def issue(self, subject, client_id, scope, confirmation=None, metadata=b""):
        out = Issued()
        buf = (c_uint8 * len(metadata)).from_buffer_copy(metadata) if metadata else None
        try:
            self.rt.call("rotoken_issue", self.handle, _arg(subject), _arg(client_id), _arg(scope),
                         _arg(confirmation), buf, len(metadata), byref(out))
            return {"refresh_token": _text(out.refresh_token), "family": out.family.decode(),
                    "generation": out.generation, "expires_at": out.expires_at}
        finally:
            self.lib.rotoken_issued_clear(byref(out))

    def rotate(self, token, client_id, scope=None, confirmation=None):
        out = Rotated()
        try:
            self.rt.call("rotoken_rotate", self.handle, _arg(token), _arg(client_id), _arg(scope),
                         _arg(confirmation), byref(out))
            metadata = ctypes.string_at(out.metadata, out.metadata_len) if out.metadata else b""
            return {"refresh_token": _text(out.refresh_token), "family": out.family.decode(),
                    "generation": out.generation, "expires_at": out.expires_at, "retried": out.retried,
                    "subject": _text(out.subject), "client_id": _text(out.client_id), "scope": _text(out.scope),
                    "confirmation": _text(out.confirmation), "metadata": metadata}
        finally:
            self.lib.rotoken_rotated_clear(byref(out))

    def introspect(self, token):
        out = Introspection()
        try:
            self.rt.call("rotoken_introspect", self.handle, _arg(token), byref(out))
            if not out.active:
                return {"active": False}
            return {"active": True, "scope": _text(out.scope), "client_id": _text(out.client_id),
                    "sub": _text(out.sub), "cnf_jkt": _text(out.cnf_jkt), "exp": out.exp, "iat": out.iat,
                    "family": out.family.decode(), "generation": out.generation}
        finally:
            self.lib.rotoken_introspection_clear(byref(out))

    def _revoke(self, name, value):
        n = c_size_t(12345)
        self.rt.call(name, self.handle, _arg(value), byref(n))
        return n.value

    def revoke_token(self, token):
        return self._revoke("rotoken_revoke_token", token)

    def revoke_family(self, family):
        return self._revoke("rotoken_revoke_family", family)

    def revoke_subject(self, subject):
        return self._revoke("rotoken_revoke_subject", subject)

    def revoke_client(self, client_id):
        return self._revoke("rotoken_revoke_client", client_id)

    def gc(self, limit=1000):
        out = GcReport()
        self.rt.call("rotoken_gc", self.handle, limit, byref(out))
        return {"removed": out.removed, "rescheduled": out.rescheduled, "events_removed": out.events_removed,
                "more": out.more}

    def check(self):
        out = CheckReport()
        try:
            self.rt.call("rotoken_check", self.handle, byref(out))
            return {"families": out.families, "active": out.active, "problem_count": out.problem_count,
                    "problems": _text(out.problems)}
        finally:
            self.lib.rotoken_check_report_clear(byref(out))
