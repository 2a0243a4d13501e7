//! Tests of `kiln images`.
use crate::harness::*;
