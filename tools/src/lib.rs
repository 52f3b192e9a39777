//! # keel-tools — operator tools
//!
//! Read-only inspection of a partition log directory, for when something looks wrong:
//! - [`logdir::verify`] scans every segment the way recovery would (lengths, CRCs, offsets) and
//!   reports what it finds, without repairing anything (recovery happens when the log is opened).
//! - [`logdir::dump`] prints batch headers, and records with `--records`.
//!
//! These run on a glommio executor because they read segments through the same O_DIRECT files
//! the broker uses.

pub mod logdir;
