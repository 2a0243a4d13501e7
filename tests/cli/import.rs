//! Tests of `kiln import`.
use crate::harness::*;
