//! Unit tests of prune, untag and delete-repository against a local store.
