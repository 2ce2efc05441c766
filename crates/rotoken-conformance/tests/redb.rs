//! The conformance suite against the embedded redb file store.

rotoken_conformance::conformance_tests!(rotoken_conformance::RedbBackend);
