#![no_std]
// This file exists to enable the library target, so netstat-user can name
// this crate as a build-dependency.
