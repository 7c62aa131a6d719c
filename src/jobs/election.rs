//! Primary election among instances sharing `OUT_DIR` (to be written).
