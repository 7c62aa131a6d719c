//! Persistence of async job records in SQLite (to be written).
