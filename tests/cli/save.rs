//! Tests of `kiln save`.
use crate::harness::*;
