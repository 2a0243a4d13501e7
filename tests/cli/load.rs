//! Tests of `kiln load`.
use crate::harness::*;
