//! Container runtime: overlay snapshots and namespaced processes (issue 4). See README.md.
