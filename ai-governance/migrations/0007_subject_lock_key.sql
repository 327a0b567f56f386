-- A random secret, shared by the replicas, under which data-subject requests name their
-- cross-replica locks: a lock's number, which any role of the database server can see, must not
-- let anyone test CPFs against it.

CREATE TABLE subject_lock_key (
    id INTEGER PRIMARY KEY,
    secret TEXT NOT NULL
);
